import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Log } from '../../guest-agent/log.js';
import { MAX_LINE } from '../../protocol/agent-ping.js';
import { HOST_GONE_RETRY_MS, openPort, Responder, serveLines, type Port } from '../../guest-agent/responder.js';
import { FakeClock, settle } from './fake-clock.js';

const stats = { uptime: '734.21', load: '0.08', memAvail: '1kB' };

function streamPair() {
  const input = new PassThrough();
  const written: string[] = [];
  const output = new Writable({
    write(chunk: Buffer, _enc, cb) {
      written.push(chunk.toString());
      cb();
    },
  });
  return { input, output, written };
}

describe('serveLines over a pair of streams', () => {
  it('answers PINGs, ignores garbage and overlong lines', async () => {
    const { input, output, written } = streamPair();
    const stop = serveLines(input, output, async () => stats);
    input.write('hello\nPING 1\n\x00\xff garbage\n');
    input.write(`${'Z'.repeat(MAX_LINE + 5)}\nPING 2\r\n`);
    input.write('PI');
    input.write('NG 3\n');
    await settle();
    expect(written).toEqual(['PONG 1 uptime=734.21 load=0.08\n', 'PONG 2 uptime=734.21 load=0.08\n', 'PONG 3 uptime=734.21 load=0.08\n']);
    stop();
    input.write('PING 4\n');
    await settle();
    expect(written).toHaveLength(3);
  });

  it('reports the end of the input', async () => {
    const { input, output } = streamPair();
    const ends: string[] = [];
    serveLines(input, output, async () => stats, (why) => ends.push(why));
    input.end();
    input.resume();
    await settle();
    expect(ends).toEqual(['closed']);
  });

  it('a full output drops replies instead of queueing them', async () => {
    const input = new PassThrough();
    let accepted = 0;
    // A writable that never calls back: after highWaterMark bytes, write() returns false.
    const output = new Writable({ highWaterMark: 10, write: () => void accepted++ });
    const writeSpy: string[] = [];
    const origWrite = output.write.bind(output);
    output.write = ((chunk: string) => {
      writeSpy.push(chunk);
      return origWrite(chunk);
    }) as typeof output.write;
    serveLines(input, output, async () => stats);
    for (let i = 0; i < 50; i++) input.write(`PING ${i}\n`);
    await settle(10);
    // The first reply fills the 10-byte buffer; everything after it is dropped until 'drain'.
    expect(writeSpy.length).toBe(1);
    expect(accepted).toBe(1);
  });
});

describe('Responder (injected port and time)', () => {
  function responder(kind: Port['kind']) {
    const clock = new FakeClock();
    const logs: string[] = [];
    let attempts = 0;
    let current: (ReturnType<typeof streamPair> & Port) | undefined;
    const r = new Responder('/dev/virtio-ports/x', 30_000, {
      openPort: async () => {
        attempts++;
        if (attempts <= 2) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
        const p = streamPair();
        current = { ...p, kind, close: () => p.input.destroy() };
        return current;
      },
      readStats: async () => stats,
      log: new Log((l) => logs.push(l)),
      later: (fn, ms) => {
        const h = clock.setTimeout(fn, ms);
        return () => clock.clearTimeout(h);
      },
    });
    return { clock, logs, r, attempts: () => attempts, current: () => current };
  }

  it('a missing port: logged once, retried every period; serves once it opens; reopens after a close', async () => {
    const { clock, logs, r, attempts, current } = responder('stream');
    await r.start();
    expect(r.open).toBe(false);
    await clock.advance(29_000);
    expect(attempts()).toBe(1);
    await clock.advance(1000);
    expect(attempts()).toBe(2);
    await clock.advance(30_000);
    expect(attempts()).toBe(3);
    expect(r.open).toBe(true);
    expect(logs).toEqual([
      'responder: cannot open /dev/virtio-ports/x (ENOENT); trying again every 30 s',
      'responder: serving /dev/virtio-ports/x',
    ]);
    current()?.input.write('PING 9\n');
    await settle();
    expect(current()?.written).toEqual(['PONG 9 uptime=734.21 load=0.08\n']);

    current()?.input.end(); // a tty or FIFO that went away
    current()?.input.resume();
    await settle();
    expect(r.open).toBe(false);
    expect(logs[2]).toBe('responder: /dev/virtio-ports/x closed; opening it again every 30 s');
    await clock.advance(30_000);
    expect(attempts()).toBe(4);
    expect(r.open).toBe(true);
    r.stop();
    expect(r.open).toBe(false);
    expect(clock.pending).toBe(0);
  });

  it('a virtio-serial port whose host end disconnects is read again within a second, without a log line', async () => {
    const { clock, logs, r, attempts, current } = responder('chardev');
    await r.start();
    await clock.advance(60_000); // two failed opens, then open
    expect(attempts()).toBe(3);
    expect(r.open).toBe(true);
    for (let cycle = 0; cycle < 3; cycle++) {
      current()?.input.end(); // EOF: the host end is not connected
      current()?.input.resume();
      await settle();
      expect(r.open).toBe(false);
      await clock.advance(HOST_GONE_RETRY_MS);
      expect(r.open).toBe(true);
      current()?.input.write(`PING ${cycle}\n`);
      await settle();
      expect(current()?.written).toEqual([`PONG ${cycle} uptime=734.21 load=0.08\n`]);
    }
    expect(attempts()).toBe(6);
    expect(logs).toEqual(['responder: cannot open /dev/virtio-ports/x (ENOENT); trying again every 30 s', 'responder: serving /dev/virtio-ports/x']);
    r.stop();
  });
});

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('openPort', () => {
  it('opens a FIFO as a stream and serves it (a pty-free stand-in for a port)', async () => {
    dir = mkdtempSync(join(tmpdir(), 'eve-diag-port-'));
    const fifo = join(dir, 'port');
    execFileSync('mkfifo', [fifo]);
    const port = await openPort(fifo);
    const replies: string[] = [];
    // Our own replies come back through the FIFO: they are not PINGs, so they are ignored.
    const stop = serveLines(port.input, { write: (s: string) => (replies.push(s), port.output.write(s)), writable: true, on: () => undefined, off: () => undefined } as unknown as Writable, async () => stats);
    port.output.write('PING 77\n');
    for (let i = 0; i < 50 && replies.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(replies).toEqual(['PONG 77 uptime=734.21 load=0.08\n']);
    stop();
    port.close();
  });

  it('a character device at end of file (as a virtio-serial port with no host) ends once and closes without an uncaught EBADF', async () => {
    const port = await openPort('/dev/null');
    expect(port.kind).toBe('chardev');
    const ends: string[] = [];
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      serveLines(port.input, port.output, async () => stats, (why) => {
        ends.push(why);
        port.close();
      });
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(ends).toEqual(['closed']);
    expect(uncaught).toEqual([]);
  });

  it('a missing path rejects with ENOENT', async () => {
    await expect(openPort('/dev/virtio-ports/eve-diag-no-such-port')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
