import { QmpError, excerptOf } from './qmp-error.js';

/** What was wrong with the data the peer sent. */
export type QmpProtocolErrorReason =
  /** The first line was not `{"QMP": {"version": ..., "capabilities": [...]}}`. */
  | 'bad-greeting'
  /** A line was not valid JSON. */
  | 'bad-json'
  /** Valid JSON, but not a QMP reply or event (wrong shape, reply without an id, a second greeting). */
  | 'bad-message'
  /** A line grew past the configured limit before its newline arrived. */
  | 'line-too-long'
  /** A reply whose `return` value does not have the shape the typed helper expects. */
  | 'bad-reply';

/**
 * The peer broke the protocol. Except for `bad-reply` (one command's result had the wrong shape: only
 * that command fails), the connection is closed, since a line protocol cannot resynchronise after an
 * unparsable line; pending commands are then rejected with a `QmpDisconnectedError` whose `cause` is
 * this error.
 */
export class QmpProtocolError extends QmpError {
  override name = 'QmpProtocolError';
  readonly reason: QmpProtocolErrorReason;
  /** A bounded, JSON-quoted excerpt of the offending data (at most a few hundred characters). */
  readonly excerpt: string;
  /** Size in bytes of the offending line (for `line-too-long`: how much had arrived when we gave up). */
  readonly lineBytes: number;

  constructor(
    reason: QmpProtocolErrorReason,
    detail: string,
    data: { text: string; lineBytes?: number },
    options?: { cause?: unknown },
  ) {
    const excerpt = excerptOf(data.text);
    super(`QMP protocol error (${reason}): ${detail}; data: ${excerpt}`, options);
    this.reason = reason;
    this.excerpt = excerpt;
    this.lineBytes = data.lineBytes ?? Buffer.byteLength(data.text);
  }
}
