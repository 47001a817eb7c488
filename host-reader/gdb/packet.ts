/**
 * GDB Remote Serial Protocol framing (the GDB manual, "Overview" of the remote protocol):
 *
 *   $<payload>#<2 hex digits: sum of the payload bytes mod 256>
 *
 * Inside the payload `#`, `$`, `}` and `*` are escaped as `}` followed by the byte XOR 0x20; a reply
 * may also be run-length encoded: `X*N` repeats X (N - 29) more times (N printable, not `#` or `$`).
 * `+` and `-` acknowledge a packet; byte 0x03 interrupts the target; `%...#xx` is a notification.
 * Encoding is pure; decoding is a byte-at-a-time state machine that never holds more than
 * `maxPacketBytes` of one packet and says what went wrong instead of throwing.
 */

export type RspItem =
  | { kind: 'ack' }
  | { kind: 'nack' }
  | { kind: 'packet'; payload: Buffer }
  | { kind: 'notification'; payload: Buffer }
  /** A packet whose checksum did not match (the sender should resend it after our `-`). */
  | { kind: 'bad-checksum' }
  /** A packet longer than the limit: dropped; the stream resynchronizes at the next `$`. */
  | { kind: 'too-long' }
  /** Bytes outside any packet (neither `+`, `-` nor `$`). */
  | { kind: 'noise'; bytes: number };

const HASH = 0x23;
const DOLLAR = 0x24;
const PERCENT = 0x25;
const STAR = 0x2a;
const BRACE = 0x7d;
const PLUS = 0x2b;
const MINUS = 0x2d;

/** Frames `payload` (text or bytes) as one packet, escaping what must be. */
export function encodePacket(payload: string | Buffer): Buffer {
  const src = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
  const out: number[] = [DOLLAR];
  let sum = 0;
  for (const b of src) {
    if (b === HASH || b === DOLLAR || b === BRACE || b === STAR) {
      out.push(BRACE, b ^ 0x20);
      sum += BRACE + (b ^ 0x20);
    } else {
      out.push(b);
      sum += b;
    }
  }
  out.push(HASH, ...Buffer.from((sum & 0xff).toString(16).padStart(2, '0'), 'latin1'));
  return Buffer.from(out);
}

export function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum += b;
  return sum & 0xff;
}

type State = 'idle' | 'body' | 'escape' | 'repeat' | 'sum1' | 'sum2';

/** A streaming decoder of the bytes a stub sends. */
export class PacketDecoder {
  readonly maxPacketBytes: number;
  #state: State = 'idle';
  /** Sum of the raw (still escaped and run-length encoded) packet bytes, for the checksum. */
  #sum = 0;
  /** Decoded payload. */
  #body: number[] = [];
  #notification = false;
  #sumHex = '';
  #over = false;
  #noise = 0;

  constructor(maxPacketBytes = 1024 * 1024) {
    this.maxPacketBytes = maxPacketBytes;
  }

  /** Feeds bytes; returns what they completed, in order. */
  push(chunk: Uint8Array): RspItem[] {
    const out: RspItem[] = [];
    for (const b of chunk) this.#byte(b, out);
    if (this.#noise > 0 && this.#state === 'idle') {
      out.push({ kind: 'noise', bytes: this.#noise });
      this.#noise = 0;
    }
    return out;
  }

  #byte(b: number, out: RspItem[]): void {
    switch (this.#state) {
      case 'idle':
        if (b === DOLLAR || b === PERCENT) {
          if (this.#noise > 0) out.push({ kind: 'noise', bytes: this.#noise });
          this.#noise = 0;
          this.#start(b === PERCENT);
        } else if (b === PLUS) out.push({ kind: 'ack' });
        else if (b === MINUS) out.push({ kind: 'nack' });
        else this.#noise++;
        return;
      case 'body':
        if (b === HASH) {
          this.#state = 'sum1';
          return;
        }
        if (b === DOLLAR) {
          // A new packet before this one ended: the old one is lost (the stub restarted it).
          out.push({ kind: 'too-long' });
          this.#start(false);
          return;
        }
        this.#sum += b;
        if (b === BRACE) this.#state = 'escape';
        else if (b === STAR && this.#body.length > 0) this.#state = 'repeat';
        else this.#emit(b);
        return;
      case 'escape':
        this.#sum += b;
        this.#emit(b ^ 0x20);
        this.#state = 'body';
        return;
      case 'repeat': {
        // `X*N`: X repeated N - 29 more times (N is at least ' ' + 3 in practice).
        this.#sum += b;
        const last = this.#body[this.#body.length - 1] as number;
        for (let i = 0; i < b - 29 && !this.#over; i++) this.#emit(last);
        this.#state = 'body';
        return;
      }
      case 'sum1':
        this.#sumHex = String.fromCharCode(b);
        this.#state = 'sum2';
        return;
      case 'sum2': {
        this.#sumHex += String.fromCharCode(b);
        this.#state = 'idle';
        if (this.#over) {
          out.push({ kind: 'too-long' });
        } else if (!/^[0-9a-fA-F]{2}$/.test(this.#sumHex) || Number.parseInt(this.#sumHex, 16) !== (this.#sum & 0xff)) {
          out.push({ kind: 'bad-checksum' });
        } else {
          out.push({ kind: this.#notification ? 'notification' : 'packet', payload: Buffer.from(this.#body) });
        }
        this.#body = [];
        return;
      }
    }
  }

  #start(notification: boolean): void {
    this.#state = 'body';
    this.#sum = 0;
    this.#body = [];
    this.#over = false;
    this.#notification = notification;
  }

  #emit(b: number): void {
    if (this.#body.length >= this.maxPacketBytes) {
      this.#over = true;
      return;
    }
    this.#body.push(b);
  }
}

/** Lowercase hex of `bytes`. */
export const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** Bytes of an even-length hex string; undefined if it is not one. */
export function fromHex(text: string): Buffer | undefined {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return undefined;
  return Buffer.from(text, 'hex');
}

/** A stub's `Enn` error reply: the number, else undefined. */
export function errorCode(reply: string): number | undefined {
  const m = /^E([0-9a-fA-F]{2})$/.exec(reply);
  return m === null ? undefined : Number.parseInt(m[1] as string, 16);
}
