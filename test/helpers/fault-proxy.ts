import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy that speaks just enough HTTP/1.1 to put faults between a client and a server. It frames
 * each request in a connection (head up to the blank line, then Content-Length bytes of body: our
 * clients keep connections alive and never send chunked bodies), asks `decide` what to do with it,
 * and records what it saw. It can also be taken down (the port refuses connections, as a controller
 * that is not running) and brought up again, and slowed to a few bytes per second (both directions,
 * or only the answers).
 */

export type FaultAction =
  /** Pass the request and its answer through. */
  | { kind: 'forward' }
  /** Answer it here (the server never sees it), with these extra headers (e.g. Retry-After), then close the connection. */
  | { kind: 'answer'; status: number; body?: string; headers?: Record<string, string> }
  /** Pass the head and the first `afterBodyBytes` bytes of the body, then cut both connections (`reset`: the client's with a TCP RST, not a FIN). */
  | { kind: 'cut'; afterBodyBytes: number; reset?: boolean }
  /** Pass the request; when the answer starts, cut both connections: the server did it, the client never hears. */
  | { kind: 'drop-answer' }
  /** Pass the request, and a copy of it at the same time to `to` (a retry racing its original, on another instance); the copy's answer is only recorded. */
  | { kind: 'duplicate'; to: { host: string; port: number } };

export interface SeenRequest {
  /** Index among every request the proxy framed, from 0. */
  n: number;
  method: string;
  path: string;
  bodyBytes: number;
  action: FaultAction['kind'];
  /** The status the copy of a duplicated request was answered with (once it is). */
  copyStatus?: number;
}

export interface FaultProxyOptions {
  target: { host: string; port: number };
  decide?: (r: Omit<SeenRequest, 'action'>) => FaultAction;
}

export interface FaultProxy {
  readonly url: string;
  readonly port: number;
  readonly requests: SeenRequest[];
  /** What to do with each request framed from now on. */
  decide: (r: Omit<SeenRequest, 'action'>) => FaultAction;
  /** Bytes per second in each direction of every connection (undefined: full speed); a change applies to open connections. */
  bytesPerSecond: number | undefined;
  /** The answers' direction only (over bytesPerSecond). */
  answerBytesPerSecond: number | undefined;
  /** Stops listening and cuts every open connection. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

const MAX_HEAD_BYTES = 64 * 1024;
const TICK_MS = 50;

/** Bytes released to `sink` at most `rate()` per second (all at once when it says undefined). */
class Pacer {
  #queue: Buffer[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    private readonly rate: () => number | undefined,
    private readonly sink: (b: Buffer) => void,
    private readonly drained: () => void = () => undefined,
  ) {}

  get empty(): boolean {
    return this.#queue.length === 0;
  }

  push(b: Buffer): void {
    if (this.#closed || b.length === 0) return;
    if (this.#queue.length === 0 && this.rate() === undefined) return this.sink(b);
    this.#queue.push(b);
    this.#timer ??= setInterval(() => this.#tick(), TICK_MS);
  }

  #tick(): void {
    const rate = this.rate();
    let budget = rate === undefined ? Infinity : Math.max(1, Math.floor((rate * TICK_MS) / 1000));
    while (budget > 0 && this.#queue.length > 0 && !this.#closed) {
      const head = this.#queue[0] as Buffer;
      const take = head.subarray(0, budget);
      if (take.length === head.length) this.#queue.shift();
      else this.#queue[0] = head.subarray(take.length);
      budget -= take.length;
      this.sink(take);
    }
    if (this.#queue.length === 0) {
      this.#stopTimer();
      this.drained();
    }
  }

  #stopTimer(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  close(): void {
    this.#closed = true;
    this.#queue = [];
    this.#stopTimer();
  }
}

/** One client connection and its upstream, with the request framing. */
class Conn {
  #head = Buffer.alloc(0);
  #bodyLeft = -1; // -1: reading a head
  #bodySent = 0;
  #action: FaultAction = { kind: 'forward' };
  #dropNextAnswer = false;
  #copy: Socket | undefined;
  #upEnded = false;
  readonly #up: Socket;
  readonly #in: Pacer;
  readonly #out: Pacer;
  #dead = false;

  constructor(
    private readonly client: Socket,
    private readonly p: ProxyState,
  ) {
    this.#up = connect(p.o.target.port, p.o.target.host);
    this.#in = new Pacer(() => p.bytesPerSecond, (b) => this.#feed(b));
    this.#out = new Pacer(() => p.answerBytesPerSecond ?? p.bytesPerSecond, (b) => client.write(b), () => this.#upEnded && client.end());
    client.on('data', (b: Buffer) => this.#in.push(b));
    this.#up.on('data', (b: Buffer) => {
      if (this.#dropNextAnswer) return this.kill();
      this.#out.push(b);
    });
    this.#up.on('end', () => {
      this.#upEnded = true;
      if (this.#out.empty) client.end();
    });
    for (const s of [client, this.#up]) {
      s.on('error', () => this.kill());
      s.on('close', () => {
        // The upstream gone after its last answer: the client is ended once the paced bytes are out, not cut.
        if (s === this.#up && this.#upEnded) return;
        this.kill();
      });
    }
  }

  kill(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#in.close();
    this.#out.close();
    if (this.#action.kind === 'cut' && this.#action.reset === true) this.client.resetAndDestroy();
    else this.client.destroy();
    this.#up.destroy();
    this.p.conns.delete(this);
  }

  #feed(chunk: Buffer): void {
    while (chunk.length > 0 && !this.#dead) {
      if (this.#bodyLeft < 0) {
        const buf = Buffer.concat([this.#head, chunk]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (buf.length > MAX_HEAD_BYTES) return this.kill();
          this.#head = buf;
          return;
        }
        const head = buf.subarray(0, end + 4);
        chunk = buf.subarray(end + 4);
        this.#head = Buffer.alloc(0);
        this.#startRequest(head);
        continue;
      }
      const part = chunk.subarray(0, this.#bodyLeft);
      chunk = chunk.subarray(part.length);
      this.#bodyLeft -= part.length;
      this.#body(part);
      if (this.#bodyLeft === 0) this.#endRequest();
    }
  }

  #startRequest(head: Buffer): void {
    const text = head.toString('latin1');
    const [method = '?', path = '?'] = (text.split('\r\n')[0] ?? '').split(' ');
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? 0);
    const seen = { n: this.p.requests.length, method, path, bodyBytes: length };
    this.#action = this.p.decide(seen);
    const record: SeenRequest = { ...seen, action: this.#action.kind };
    this.p.requests.push(record);
    this.#copy = this.#action.kind === 'duplicate' ? this.#duplicate(this.#action.to, head, record) : undefined;
    this.#bodyLeft = length;
    this.#bodySent = 0;
    if (this.#action.kind !== 'answer') this.#up.write(head);
    if (this.#action.kind === 'drop-answer') this.#dropNextAnswer = true;
    if (this.#action.kind === 'cut' && this.#action.afterBodyBytes === 0) return this.kill();
    if (length === 0) this.#endRequest();
  }

  #body(part: Buffer): void {
    const a = this.#action;
    if (a.kind === 'answer') return;
    if (a.kind === 'cut') {
      const room = a.afterBodyBytes - this.#bodySent;
      this.#up.write(part.subarray(0, room));
      this.#bodySent += Math.min(room, part.length);
      if (this.#bodySent >= a.afterBodyBytes) this.kill();
      return;
    }
    this.#up.write(part);
    this.#copy?.write(part);
  }

  /** A connection of its own carrying a copy of the request; closed once the copy's answer starts. */
  #duplicate(to: { host: string; port: number }, head: Buffer, record: SeenRequest): Socket {
    const side = connect(to.port, to.host);
    side.on('error', () => side.destroy());
    side.once('data', (b: Buffer) => {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(b.toString('latin1'));
      if (status !== null) record.copyStatus = Number(status[1]);
      side.destroy();
    });
    side.write(head);
    return side;
  }

  #endRequest(): void {
    const a = this.#action;
    this.#bodyLeft = -1;
    if (a.kind === 'cut') return this.kill();
    if (a.kind === 'answer') {
      const body = a.body ?? JSON.stringify({ error: `fault proxy: ${a.status}` });
      this.#upEnded = true;
      this.#up.destroy();
      const extra = Object.entries(a.headers ?? {})
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      this.#out.push(Buffer.from(`HTTP/1.1 ${a.status} Fault\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`));
      if (this.#out.empty) this.client.end();
    }
  }
}

interface ProxyState {
  o: FaultProxyOptions;
  requests: SeenRequest[];
  conns: Set<Conn>;
  decide: FaultProxy['decide'];
  bytesPerSecond: number | undefined;
  answerBytesPerSecond: number | undefined;
}

export async function startFaultProxy(o: FaultProxyOptions): Promise<FaultProxy> {
  const conns = new Set<Conn>();
  let server: Server | undefined;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        client.setNoDelay(true);
        state.conns.add(new Conn(client, state));
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as { port: number }).port;
        server = s;
        resolve();
      });
    });
  const unlisten = async () => {
    const s = server;
    server = undefined;
    for (const c of [...conns]) c.kill();
    if (s !== undefined) await new Promise<void>((r) => s.close(() => r()));
  };
  const state: ProxyState & FaultProxy = {
    o,
    requests: [],
    conns,
    decide: o.decide ?? (() => ({ kind: 'forward' })),
    bytesPerSecond: undefined,
    answerBytesPerSecond: undefined,
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    down: unlisten,
    up: async () => {
      if (server === undefined) await listen();
    },
    close: unlisten,
  };
  await listen();
  return state;
}

/**
 * What a byte relay does with its connection number `n` (from 0): pass it, or cut it (both sockets
 * destroyed, the client's with a TCP RST) once this many bytes went up (client to server) or down.
 */
export type CutPlan = { afterUpBytes?: number; afterDownBytes?: number } | undefined;

export interface ByteRelay {
  readonly port: number;
  /** Per connection: bytes up, bytes down, and whether it was cut. */
  readonly conns: { up: number; down: number; cut: boolean }[];
  close(): Promise<void>;
}

/**
 * A TCP relay that knows nothing of what it carries (so it carries TLS), cutting connections where
 * `plan` says: a TLS session broken mid-record, mid-handshake or mid-answer, as a middlebox or a
 * controller that dies would.
 */
export async function startByteRelay(target: { host: string; port: number }, plan: (n: number) => CutPlan): Promise<ByteRelay> {
  const conns: ByteRelay['conns'] = [];
  const open = new Set<Socket>();
  const server = createServer((client) => {
    const n = conns.length;
    const stat = { up: 0, down: 0, cut: false };
    conns.push(stat);
    const p = plan(n);
    const upstream = connect(target.port, target.host);
    open.add(client).add(upstream);
    const cut = () => {
      stat.cut = true;
      client.resetAndDestroy();
      upstream.destroy();
    };
    // Up to `limit`, then the cut: the bytes before it go through, none after.
    const relay = (from: Socket, to: Socket, dir: 'up' | 'down', limit: number | undefined) =>
      from.on('data', (b: Buffer) => {
        if (stat.cut) return;
        const room = limit === undefined ? b.length : limit - stat[dir];
        if (room < b.length) {
          if (room > 0) to.write(b.subarray(0, room));
          stat[dir] += Math.max(0, room);
          // Give the written bytes a moment to leave before the sockets go.
          setTimeout(cut, 20);
          stat.cut = true;
          return;
        }
        stat[dir] += b.length;
        to.write(b);
      });
    relay(client, upstream, 'up', p?.afterUpBytes);
    relay(upstream, client, 'down', p?.afterDownBytes);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    conns,
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
