import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A fake VM console on a unix socket, shaped like QEMU's chardev socket server with a shell behind it:
 * it serves one client at a time (a second client waits until the first leaves, as QEMU leaves it in
 * the listen backlog), optionally echoes input like a tty, prints a login prompt, and answers command
 * lines through `answer`. Everything each client sent is recorded.
 */
export interface FakeConsoleOptions {
  /** Echo received bytes back (a tty with echo on). */
  echo?: boolean;
  /** Printed to each client when it connects. */
  banner?: string;
  /** Reply to one received line (without its newline); undefined: say nothing. */
  answer?: (line: string, client: number) => string | undefined;
}

export class FakeConsole {
  readonly received: string[] = [];
  /** Connection and close times (performance.now()) of each client. */
  readonly sessions: { opened: number; closed?: number }[] = [];
  #active: Socket | undefined;
  #waiting: Socket[] = [];

  private constructor(
    readonly path: string,
    private readonly dir: string,
    private readonly server: Server,
    private readonly options: FakeConsoleOptions,
  ) {
    server.on('connection', (s) => {
      s.on('error', () => undefined);
      if (this.#active === undefined) this.#serve(s);
      else this.#waiting.push(s);
    });
  }

  static async start(options: FakeConsoleOptions = {}): Promise<FakeConsole> {
    const dir = await mkdtemp(join(tmpdir(), 'fake-console-'));
    const path = join(dir, 'cons.sock');
    const server = createServer();
    await new Promise<void>((r) => server.listen(path, r));
    return new FakeConsole(path, dir, server, options);
  }

  get connected(): boolean {
    return this.#active !== undefined;
  }

  #serve(s: Socket): void {
    this.#active = s;
    const n = this.sessions.push({ opened: performance.now() });
    let text = '';
    let line = '';
    s.on('data', (b: Buffer) => {
      const chunk = b.toString('latin1');
      text += chunk;
      if (this.options.echo === true) s.write(chunk.replace(/\n/g, '\r\n'));
      for (const ch of chunk) {
        if (ch === '\n' || ch === '\r') {
          const reply = this.options.answer?.(line, n);
          if (reply !== undefined) s.write(reply);
          line = '';
        } else {
          line += ch;
        }
      }
    });
    s.on('close', () => {
      this.received.push(text);
      const sess = this.sessions[n - 1];
      if (sess !== undefined) sess.closed = performance.now();
      this.#active = undefined;
      const next = this.#waiting.shift();
      if (next !== undefined) this.#serve(next);
    });
    if (this.options.banner !== undefined) s.write(this.options.banner);
  }

  async close(): Promise<void> {
    this.#active?.destroy();
    for (const w of this.#waiting) w.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    await rm(this.dir, { recursive: true, force: true });
  }
}
