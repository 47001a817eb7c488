import { createConnection, type Socket } from 'node:net';
import { encodePacket, errorCode, fromHex, PacketDecoder, toHex } from './packet.js';

/**
 * A client of QEMU's gdbstub (GDB Remote Serial Protocol) for reading a stopped guest: threads (one
 * per vCPU), registers, virtual memory through the selected vCPU's page tables, breakpoints, and
 * detach. What QEMU does, measured on 7.2 (see DESIGN and host-reader/gdb/README in the code):
 *
 * - connecting stops the whole VM; `D;1` resumes it (even one that was paused before: the caller
 *   restores the run state it saw through QMP); closing without `D` leaves it paused, so close()
 *   detaches first;
 * - no QStartNoAckMode: QEMU sends `+` before each reply (skipped); 7.2 sends a stop reply on its own
 *   right after connect (kept as `lastStop`, never taken for the answer to another request);
 * - `p` answers nothing on 7.2 until `target.xml` was read: connect() reads it;
 * - `k` and `vKill` end QEMU: this client has no way to send them;
 * - Nagle's algorithm costs ~44 ms per exchange: the socket is NODELAY.
 *
 * Every reply is bounded (`maxPacketBytes`) and every request has a timeout; a timeout or a protocol
 * error closes the connection (its state is unknown after that).
 */

export type GdbTarget = { readonly path: string } | { readonly host: string; readonly port: number };

export interface GdbClientOptions {
  /** Per-request timeout. Default 5 s. */
  timeoutMs?: number;
  /** Connect timeout. Default 5 s. */
  connectTimeoutMs?: number;
  /** Longest reply accepted. Default 1 MiB. */
  maxPacketBytes?: number;
  /** How long to wait at connect for the stop reply QEMU 7.2 sends unasked. Default 100 ms. */
  settleMs?: number;
}

export class GdbError extends Error {
  override name = 'GdbError';
}
export class GdbTimeoutError extends GdbError {
  override name = 'GdbTimeoutError';
}
/** The stub answered `Enn`. */
export class GdbReplyError extends GdbError {
  override name = 'GdbReplyError';
  constructor(
    readonly request: string,
    readonly code: number,
  ) {
    super(`${request}: the stub answered E${code.toString(16).padStart(2, '0')}`);
  }
}

export interface StopReply {
  /** `T05thread:p01.01;` as received. */
  text: string;
  signal: number;
  /** The thread id that stopped (`p01.01` or `01`), when given. */
  thread?: string;
}

/** Parses a `T`/`S` stop reply; undefined for anything else. */
export function parseStopReply(text: string): StopReply | undefined {
  const m = /^([TS])([0-9a-fA-F]{2})(.*)$/.exec(text);
  if (m === null) return undefined;
  const thread = /(?:^|;)thread:([^;]+);/.exec(m[3] as string)?.[1];
  return { text, signal: Number.parseInt(m[2] as string, 16), ...(thread !== undefined ? { thread } : {}) };
}

const STOPS = /^[TSWX][0-9a-fA-F]{2}/;

interface Pending {
  /** Whether a stop reply answers this request (`?`, `c`, `s`, interrupt). */
  wantsStop: boolean;
  /** qRcmd: `O<hex>` output packets come before the final OK. */
  output?: string[];
  resolve: (reply: string) => void;
  reject: (e: Error) => void;
}

export class GdbClient {
  readonly #socket: Socket;
  readonly #o: Required<GdbClientOptions>;
  readonly #decoder: PacketDecoder;
  #queue: Promise<unknown> = Promise.resolve();
  #pending: Pending | undefined;
  #lastSent: Buffer | undefined;
  #closed: Error | undefined;
  #detached = false;
  /** From qSupported: the stub's PacketSize (bytes). */
  packetSize = 4096;
  features = new Map<string, string>();
  multiprocess = false;
  /** The last stop reply seen (asked for or not). */
  lastStop: StopReply | undefined;
  /** target.xml as the stub gave it (includes resolved). */
  targetXml = '';

  private constructor(socket: Socket, o: Required<GdbClientOptions>) {
    this.#socket = socket;
    this.#o = o;
    this.#decoder = new PacketDecoder(o.maxPacketBytes);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (e) => this.#fail(new GdbError(`gdbstub connection: ${e.message}`, { cause: e })));
    socket.on('close', () => this.#fail(new GdbError('the gdbstub closed the connection')));
  }

  /** Connects, negotiates (qSupported with multiprocess), reads target.xml and the stop state. */
  static async connect(target: GdbTarget, options: GdbClientOptions = {}): Promise<GdbClient> {
    const o: Required<GdbClientOptions> = { timeoutMs: 5000, connectTimeoutMs: 5000, maxPacketBytes: 1024 * 1024, settleMs: 100, ...options };
    const socket = 'path' in target ? createConnection(target.path) : createConnection(target.port, target.host);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        socket.destroy();
        reject(new GdbTimeoutError(`no gdbstub connection within ${o.connectTimeoutMs} ms`));
      }, o.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(t);
        resolve();
      });
      socket.once('error', (e) => {
        clearTimeout(t);
        reject(new GdbError(`cannot connect to the gdbstub at ${'path' in target ? target.path : `${target.host}:${target.port}`}: ${e.message}`, { cause: e }));
      });
    });
    socket.setNoDelay(true);
    const c = new GdbClient(socket, o);
    try {
      await new Promise((r) => setTimeout(r, o.settleMs));
      const sup = await c.request('qSupported:multiprocess+;xmlRegisters=i386;vContSupported+');
      for (const item of sup.split(';')) {
        const eq = item.indexOf('=');
        if (eq > 0) c.features.set(item.slice(0, eq), item.slice(eq + 1));
        else if (item !== '') c.features.set(item.replace(/[+-]$/, ''), item.endsWith('-') ? '-' : '+');
      }
      const size = Number.parseInt(c.features.get('PacketSize') ?? '1000', 16);
      c.packetSize = Number.isFinite(size) && size >= 64 ? Math.min(size, o.maxPacketBytes) : 4096;
      c.multiprocess = c.features.get('multiprocess') === '+';
      if (c.features.get('qXfer:features:read') === '+') c.targetXml = await c.readFeature('target.xml');
      c.lastStop = parseStopReply(await c.request('?', { wantsStop: true }));
      return c;
    } catch (e) {
      await c.close();
      throw e;
    }
  }

  /** Sends one packet and resolves with its reply (text, latin1). Requests are sent one at a time. */
  request(payload: string, o: { wantsStop?: boolean; timeoutMs?: number; output?: string[] } = {}): Promise<string> {
    if (/^(k|vKill)/.test(payload)) return Promise.reject(new RangeError(`${payload}: would end QEMU; this client never sends it`));
    const run = this.#queue.then(() => this.#send(payload, o));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #send(payload: string, o: { wantsStop?: boolean; timeoutMs?: number; output?: string[] }): Promise<string> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<string>((resolve, reject) => {
      const timeoutMs = o.timeoutMs ?? this.#o.timeoutMs;
      const t = setTimeout(() => {
        this.#pending = undefined;
        const e = new GdbTimeoutError(`${payload.slice(0, 40)}: no reply within ${timeoutMs} ms`);
        this.#fail(e);
        reject(e);
      }, timeoutMs);
      this.#pending = {
        wantsStop: o.wantsStop ?? false,
        ...(o.output ? { output: o.output } : {}),
        resolve: (r) => {
          clearTimeout(t);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      };
      this.#lastSent = encodePacket(payload);
      this.#socket.write(this.#lastSent);
    });
  }

  #onData(chunk: Buffer): void {
    for (const item of this.#decoder.push(chunk)) {
      switch (item.kind) {
        case 'ack':
        case 'noise':
        case 'notification':
          break;
        case 'nack':
          if (this.#lastSent) this.#socket.write(this.#lastSent);
          break;
        case 'bad-checksum':
          this.#socket.write('-');
          break;
        case 'too-long':
          this.#fail(new GdbError(`a reply longer than ${this.#o.maxPacketBytes} bytes`));
          return;
        case 'packet': {
          this.#socket.write('+');
          const text = item.payload.toString('latin1');
          const p = this.#pending;
          if (STOPS.test(text)) {
            const stop = parseStopReply(text);
            if (stop) this.lastStop = stop;
            if (p === undefined || !p.wantsStop) break; // unsolicited (7.2 after connect)
          }
          if (p === undefined) break;
          if (p.output !== undefined && /^O([0-9a-fA-F]{2})+$/.test(text)) {
            p.output.push((fromHex(text.slice(1)) ?? Buffer.alloc(0)).toString('utf8'));
            break;
          }
          this.#pending = undefined;
          p.resolve(text);
        }
      }
    }
  }

  #fail(e: Error): void {
    if (this.#closed) return;
    this.#closed = e;
    this.#socket.destroy();
    const p = this.#pending;
    this.#pending = undefined;
    p?.reject(e);
  }

  /** A request whose reply must be OK. */
  async expectOk(payload: string): Promise<void> {
    const r = await this.request(payload);
    const code = errorCode(r);
    if (code !== undefined) throw new GdbReplyError(payload, code);
    if (r !== 'OK') throw new GdbError(`${payload}: expected OK, got ${JSON.stringify(r.slice(0, 80))}`);
  }

  /** A `qXfer:features:read` annex, chunk by chunk (bounded by maxPacketBytes in total). */
  async readFeature(annex: string): Promise<string> {
    let out = '';
    const chunk = Math.max(64, Math.floor((this.packetSize - 5) / 2));
    for (let off = 0; out.length < this.#o.maxPacketBytes; ) {
      const r = await this.request(`qXfer:features:read:${annex}:${off.toString(16)},${chunk.toString(16)}`);
      if (r.length === 0 || errorCode(r) !== undefined) throw new GdbError(`qXfer ${annex}: ${JSON.stringify(r.slice(0, 20))}`);
      const body = r.slice(1);
      out += body;
      off += body.length;
      if (r[0] === 'l') return out;
      if (r[0] !== 'm' || body.length === 0) throw new GdbError(`qXfer ${annex}: an unexpected reply ${JSON.stringify(r.slice(0, 20))}`);
    }
    throw new GdbError(`qXfer ${annex}: longer than ${this.#o.maxPacketBytes} bytes`);
  }

  /** The thread ids (one per vCPU, in order), at most `max`. */
  async threads(max = 1024): Promise<string[]> {
    const out: string[] = [];
    for (let r = await this.request('qfThreadInfo'); r.startsWith('m'); r = await this.request('qsThreadInfo')) {
      for (const id of r.slice(1).split(',')) if (id !== '') out.push(id);
      if (out.length > max) throw new GdbError(`more than ${max} threads`);
    }
    return out;
  }

  /** `qThreadExtraInfo`: QEMU says `CPU#0 [halted ]` or `CPU#0 [running]`. */
  async threadInfo(id: string): Promise<string> {
    const r = await this.request(`qThreadExtraInfo,${id}`);
    return (fromHex(r) ?? Buffer.alloc(0)).toString('utf8').slice(0, 200);
  }

  /** Selects the vCPU for registers and memory (`Hg`) or for continue/step (`Hc`). */
  selectThread(id: string, op: 'g' | 'c' = 'g'): Promise<void> {
    return this.expectOk(`H${op}${id}`);
  }

  /** The `g` register block of the selected vCPU. */
  async readRegisters(): Promise<Buffer> {
    const r = await this.request('g');
    const code = errorCode(r);
    if (code !== undefined) throw new GdbReplyError('g', code);
    const b = fromHex(r);
    if (b === undefined) throw new GdbError(`g: not hex (${r.length} characters)`);
    return b;
  }

  /** One register (`p`), little-endian bytes. */
  async readRegister(num: number): Promise<Buffer> {
    const r = await this.request(`p${num.toString(16)}`);
    const code = errorCode(r);
    if (code !== undefined) throw new GdbReplyError(`p${num.toString(16)}`, code);
    const b = fromHex(r);
    if (b === undefined || b.length === 0) throw new GdbError(`p${num.toString(16)}: no value (${JSON.stringify(r.slice(0, 20))})`);
    return b;
  }

  writeRegister(num: number, value: Buffer): Promise<void> {
    return this.expectOk(`P${num.toString(16)}=${toHex(value)}`);
  }

  /** Bytes of a chunk: `m` replies are hex, so half the packet size, and QEMU's own 0x800 rule. */
  get memoryChunk(): number {
    return Math.max(16, Math.min(0x800, Math.floor(this.packetSize / 2) - 16));
  }

  /**
   * `len` bytes at virtual address `addr` (through the selected vCPU's page tables), read in chunks;
   * an unmapped page answers E14, thrown as a GdbReplyError.
   */
  async readMemory(addr: bigint, len: number): Promise<Buffer> {
    if (!Number.isSafeInteger(len) || len < 0 || len > 64 * 1024 * 1024) throw new RangeError(`read of ${len} bytes`);
    const parts: Buffer[] = [];
    for (let off = 0; off < len; ) {
      const n = Math.min(this.memoryChunk, len - off);
      const at = BigInt.asUintN(64, addr + BigInt(off));
      const req = `m${at.toString(16)},${n.toString(16)}`;
      const r = await this.request(req);
      const code = errorCode(r);
      if (code !== undefined) throw new GdbReplyError(req, code);
      const b = fromHex(r);
      if (b === undefined || b.length === 0 || b.length > n) throw new GdbError(`${req}: a reply of ${r.length} characters`);
      parts.push(b);
      off += b.length;
    }
    return Buffer.concat(parts);
  }

  async writeMemory(addr: bigint, data: Buffer): Promise<void> {
    for (let off = 0; off < data.length; ) {
      const n = Math.min(this.memoryChunk, data.length - off);
      await this.expectOk(`M${BigInt.asUintN(64, addr + BigInt(off)).toString(16)},${n.toString(16)}:${toHex(data.subarray(off, off + n))}`);
      off += n;
    }
  }

  /** Z0 (software) or Z1 (hardware) breakpoint at a virtual address. */
  insertBreakpoint(addr: bigint, type: 0 | 1 = 0): Promise<void> {
    return this.expectOk(`Z${type},${addr.toString(16)},1`);
  }

  removeBreakpoint(addr: bigint, type: 0 | 1 = 0): Promise<void> {
    return this.expectOk(`z${type},${addr.toString(16)},1`);
  }

  /** Resumes the VM and resolves with the next stop (a breakpoint, or interrupt() from elsewhere). */
  async continueUntilStop(timeoutMs: number): Promise<StopReply> {
    const r = await this.request('c', { wantsStop: true, timeoutMs });
    const stop = parseStopReply(r);
    if (stop === undefined) throw new GdbError(`c: not a stop reply (${JSON.stringify(r.slice(0, 40))})`);
    return stop;
  }

  /** A monitor command (`qRcmd`): its output. */
  async monitor(command: string): Promise<string> {
    const output: string[] = [];
    const r = await this.request(`qRcmd,${toHex(Buffer.from(command, 'utf8'))}`, { output });
    const code = errorCode(r);
    if (code !== undefined) throw new GdbReplyError(`qRcmd ${command}`, code);
    return output.join('') + (r === 'OK' || r === '' ? '' : (fromHex(r)?.toString('utf8') ?? ''));
  }

  /** Detaches (`D;1` once multiprocess is on): QEMU removes breakpoints and resumes the VM. */
  async detach(): Promise<void> {
    if (this.#detached || this.#closed) return;
    await this.expectOk(this.multiprocess ? 'D;1' : 'D');
    this.#detached = true;
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /** Detaches (best effort, 1 s) unless done, then closes the socket. */
  async close(): Promise<void> {
    if (!this.#detached && !this.#closed) {
      await this.request(this.multiprocess ? 'D;1' : 'D', { timeoutMs: 1000 }).then(
        () => (this.#detached = true),
        () => undefined,
      );
    }
    this.#fail(new GdbError('closed'));
  }
}
