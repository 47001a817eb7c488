/**
 * The agent's PING/PONG: a line protocol on a serial or virtio-serial port (`/dev/ttyS1`,
 * `/dev/virtio-ports/NAME` in the guest; a chardev socket on the host) for a host that wants a
 * userspace round trip, not only the heartbeat.
 *
 *   host:  PING <n>            n: 1 to 20 digits, chosen by the host (a counter)
 *   agent: PONG <n> uptime=<s> load=<1-min load>
 *
 * Lines end with LF (a CR before it is ignored). Anything else is ignored, without a reply; a line
 * longer than MAX_LINE bytes is dropped up to its end, on both sides: each reads the other's bytes as
 * hostile. Shared by the agent's responder and the host's `agent-ping` probe; pure.
 */

export const MAX_LINE = 128;

/**
 * The virtio-serial port name `eve-diag qemu-args --agent-port` gives the responder's port; the guest
 * sees it as `/dev/virtio-ports/org.lfedge.eve.diag.0` (udev's link; `/sys/class/virtio-ports/vportNpM/name`
 * holds the name where there is no udev).
 */
export const AGENT_PORT_NAME = 'org.lfedge.eve.diag.0';

/** Splits a byte stream into lines, holding at most `maxLine` bytes; longer lines are dropped whole. */
export class LineSplitter {
  #buf: Buffer[] = [];
  #len = 0;
  #discarding = false;

  constructor(readonly maxLine = MAX_LINE) {}

  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      const piece = chunk.subarray(start, end);
      if (!this.#discarding) {
        if (this.#len + piece.length > this.maxLine) {
          this.#discarding = true;
          this.#buf = [];
          this.#len = 0;
        } else if (piece.length > 0) {
          // Copy: the caller may reuse its buffer.
          this.#buf.push(Buffer.from(piece));
          this.#len += piece.length;
        }
      }
      if (nl < 0) break;
      if (!this.#discarding) lines.push(Buffer.concat(this.#buf, this.#len).toString('latin1').replace(/\r$/, ''));
      this.#buf = [];
      this.#len = 0;
      this.#discarding = false;
      start = nl + 1;
    }
    return lines;
  }
}

const PING = /^PING ([0-9]{1,20})$/;
// uptime and load as the kernel prints them (procstat), or `?` when the agent could not read them.
const PONG = /^PONG ([0-9]{1,20}) uptime=([0-9]{1,20}(?:\.[0-9]{1,6})?|\?) load=([0-9]{1,10}(?:\.[0-9]{1,6})?|\?)$/;

/** The host's request. `n` is 1 to 20 digits. */
export function formatPing(n: string): string {
  if (!/^[0-9]{1,20}$/.test(n)) throw new RangeError(`PING n: 1 to 20 digits (got ${JSON.stringify(n)})`);
  return `PING ${n}`;
}

/** The `n` of a PING line, or undefined when the line is not one. */
export function parsePing(line: string): string | undefined {
  return PING.exec(line.trim())?.[1];
}

export interface PongStats {
  uptime: string;
  load: string;
}

export function formatPong(n: string, stats: PongStats): string {
  return `PONG ${n} uptime=${stats.uptime} load=${stats.load}`;
}

export interface Pong {
  n: string;
  /** Guest uptime in seconds, undefined when the agent sent `?`. */
  uptimeS?: number;
  load?: number;
}

/** A PONG line, or undefined when the line is not one (strict: a hostile guest's line is just ignored). */
export function parsePong(line: string): Pong | undefined {
  const m = PONG.exec(line.trim());
  if (m === null) return undefined;
  const num = (s: string | undefined) => (s === undefined || s === '?' ? undefined : Number(s));
  const uptimeS = num(m[2]);
  const load = num(m[3]);
  return { n: m[1] as string, ...(uptimeS === undefined ? {} : { uptimeS }), ...(load === undefined ? {} : { load }) };
}

/** The agent's reply to one line, or undefined when the line is not a PING. */
export function reply(line: string, stats: PongStats): string | undefined {
  const n = parsePing(line);
  return n === undefined ? undefined : formatPong(n, stats);
}
