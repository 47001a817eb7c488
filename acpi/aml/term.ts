import type { ByteSink } from './sink.js';

/** Every AML term encodes itself; `kind` names the ASL term (the ASL emitter and decoder switch on it). */
export interface Encodable {
  readonly kind: string;
  encode(sink: ByteSink): void;
}
