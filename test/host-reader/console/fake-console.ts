import { appendFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A fake EVE console: a unix socket server standing in for QEMU's `mux=on` chardev, plus its logfile. It
 * records what clients send, can flood a client with output (to check that the sender drains), and
 * plays a guest that answers SysRq: after Ctrl-A b (a BREAK) the next key makes it append the kernel's
 * `sysrq: ...` line and some output to the logfile, as QEMU + Linux do.
 */
export class FakeConsole {
  readonly received: Buffer[] = [];
  /** Keys handled as SysRq, in order. */
  readonly sysrqKeys: string[] = [];
  /** Connections accepted so far. */
  accepted = 0;
  /** Bytes written to clients (flood). */
  flooded = 0;
  /** Lines appended to the log per SysRq key (after the header). */
  sysrqOutputLines = 20;
  /** Delay before the guest answers a SysRq key. */
  sysrqDelayMs = 20;
  /** Answer a BREAK + key (as a mux console does). */
  answerBreak = true;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #floodBytes = 0;
  /** A BREAK came from QMP `chardev-send-break`: the next byte received is a SysRq key. */
  #qmpBreak = false;

  private constructor(
    server: Server,
    readonly dir: string,
    readonly path: string,
    readonly logPath: string,
  ) {
    this.#server = server;
    server.on('connection', (s) => this.#accept(s));
  }

  static async start(): Promise<FakeConsole> {
    const dir = await mkdtemp(join(tmpdir(), 'fake-console-'));
    const path = join(dir, 'cons.sock');
    const logPath = join(dir, 'console.log');
    writeFileSync(logPath, 'boot\r\n');
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return new FakeConsole(server, dir, path, logPath);
  }

  /** Everything clients sent, concatenated. */
  get bytes(): Buffer {
    return Buffer.concat(this.received);
  }

  /** Writes this many bytes to each new client (honouring backpressure), like QEMU echoing a big dump. */
  floodOnConnect(bytes: number): void {
    this.#floodBytes = bytes;
  }

  /** QMP `chardev-send-break` on this chardev: the next byte any client sends is a SysRq key. */
  sendBreak(): void {
    this.#qmpBreak = true;
  }

  /** Appends to the logfile, as the guest printing. */
  print(text: string): void {
    appendFileSync(this.logPath, text);
  }

  /** What the fake kernel prints for SysRq `key` (also used by the fake QMP send-key). */
  answerSysrq(key: string): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      this.sysrqKeys.push(key);
      const header = { w: 'Show Blocked State', t: 'Show State', l: 'Show backtrace of all active CPUs', m: 'Show Memory', q: 'Show clockevent devices & pending hrtimers (no others)' }[key] ?? `key ${key}`;
      let text = `[   12.345678] sysrq: ${header}\r\n`;
      for (let i = 0; i < this.sysrqOutputLines; i++) text += `[   12.345679] \x1b[1m${key}-line ${i}\x1b[0m\r\n`;
      this.print(text);
    }, this.sysrqDelayMs);
    this.#timers.add(timer);
  }

  async close(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }

  #accept(socket: Socket): void {
    this.accepted += 1;
    this.#sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => this.#sockets.delete(socket));
    let pendingBreak = false;
    let escape = false;
    socket.on('data', (chunk: Buffer) => {
      this.received.push(chunk);
      for (const byte of chunk) {
        if (escape) {
          escape = false;
          if (byte === 0x62 /* b */) pendingBreak = true;
          continue;
        }
        if (byte === 0x01) {
          escape = true;
          continue;
        }
        if ((pendingBreak || this.#qmpBreak) && this.answerBreak) {
          pendingBreak = false;
          this.#qmpBreak = false;
          this.answerSysrq(String.fromCharCode(byte));
        }
      }
    });
    if (this.#floodBytes > 0) this.#flood(socket, this.#floodBytes).catch(() => socket.destroy());
  }

  async #flood(socket: Socket, total: number): Promise<void> {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let sent = 0;
    while (sent < total && !socket.destroyed) {
      const more = socket.write(chunk);
      sent += chunk.length;
      this.flooded += chunk.length;
      if (!more) {
        await new Promise<void>((resolve) => {
          socket.once('drain', resolve);
          socket.once('close', resolve);
        });
      }
    }
  }
}
