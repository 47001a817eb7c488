import { afterEach, describe, expect, it } from 'vitest';
import {
  QmpAbortError,
  QmpClient,
  QmpCommandError,
  QmpConnectError,
  QmpDisconnectedError,
  QmpError,
  QmpProtocolError,
  QmpTimeoutError,
  type QmpClientOptions,
  type QmpEvent,
  type Timers,
} from '../../../host-reader/qmp/index.js';
import { FakeQmpServer, type FakeQmpServerOptions } from '../../helpers/fake-qmp-server.js';

/** Real timers that count how many are armed, to prove every path clears its timer. */
function countingTimers(): Timers & { readonly live: number } {
  const live = new Set<unknown>();
  return {
    setTimeout(callback, ms) {
      const handle = setTimeout(() => {
        live.delete(handle);
        callback();
      }, ms);
      live.add(handle);
      return handle;
    },
    clearTimeout(handle) {
      live.delete(handle);
      clearTimeout(handle as ReturnType<typeof setTimeout>);
    },
    get live() {
      return live.size;
    },
  };
}

/** Settles a promise into its rejection reason (fails the test if it resolves). */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

let servers: FakeQmpServer[] = [];
let clients: QmpClient[] = [];

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.close()));
  clients = [];
  servers = [];
});

async function startServer(options?: FakeQmpServerOptions): Promise<FakeQmpServer> {
  const server = await FakeQmpServer.start(options);
  servers.push(server);
  return server;
}

async function connect(server: FakeQmpServer, options: QmpClientOptions & { timeoutMs?: number } = {}): Promise<QmpClient> {
  const client = await QmpClient.connect({ path: server.path }, options);
  clients.push(client);
  return client;
}

describe('QmpClient session', () => {
  it('connects, exposes the version, runs commands and closes', async () => {
    const server = await startServer();
    server.handle('query-status', { return: { status: 'running', singlestep: false, running: true } });
    server.handle('human-monitor-command', (cmd) => ({ return: `ran ${String(cmd.arguments?.['command-line'])}\r\n` }));
    const timers = countingTimers();
    const client = await connect(server, { timers });

    expect(client.state).toBe('running');
    expect(client.target).toBe(`unix:${server.path}`);
    expect(client.version).toEqual({ major: 7, minor: 2, micro: 22, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' });
    expect(client.greeting?.capabilities).toEqual(['oob']);

    expect(await client.queryStatus()).toEqual({ running: true, status: 'running', singlestep: false });
    expect(await client.execute('query-status')).toEqual({ status: 'running', singlestep: false, running: true });
    expect(await client.hmp('info version')).toBe('ran info version\r\n');
    expect(timers.live).toBe(0);

    const ids = server.received.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => typeof id === 'string')).toBe(true);

    await client.close();
    expect(client.state).toBe('closed');
    expect(await client.closed).toBeUndefined();
    await client.close(); // idempotent
  });

  it('connects over TCP too', async () => {
    const server = await startServer({ transport: 'tcp' });
    server.handle('query-status', { return: { status: 'paused', running: false } });
    const client = await QmpClient.connect(server.target);
    clients.push(client);
    expect(client.target).toBe(`tcp:127.0.0.1:${server.port}`);
    expect(await client.queryStatus()).toEqual({ running: false, status: 'paused' });
  });

  it('rejects a query-status reply of the wrong shape without closing', async () => {
    const server = await startServer();
    server.handle('query-status', { return: { status: 1 } });
    const client = await connect(server);
    await expect(client.queryStatus()).rejects.toMatchObject({ name: 'QmpProtocolError', reason: 'bad-reply' });
    expect(client.state).toBe('running');
  });

  it('sends the typed helpers with the arguments QEMU expects', async () => {
    const server = await startServer();
    for (const name of ['pmemsave', 'stop', 'cont', 'system_reset', 'quit']) server.handle(name, { return: {} });
    const client = await connect(server);
    await client.pmemsave(0x1ffe0000, 4096, '/tmp/dump.bin');
    await client.stop();
    await client.cont();
    await client.systemReset();
    await client.quit();
    expect(server.received.slice(1).map((c) => [c.execute, c.arguments])).toEqual([
      ['pmemsave', { val: 0x1ffe0000, size: 4096, filename: '/tmp/dump.bin' }],
      ['stop', undefined],
      ['cont', undefined],
      ['system_reset', undefined],
      ['quit', undefined],
    ]);
  });

  it('treats a connection dropped under quit as success', async () => {
    const server = await startServer();
    server.handle('quit', (_cmd, s) => {
      s.dropClient();
      return { noReply: true };
    });
    const client = await connect(server);
    await expect(client.quit()).resolves.toBeUndefined();
    expect(await client.closed).toBeInstanceOf(QmpDisconnectedError);
  });

  it('negotiates capabilities before any command, and connect() waits for it', async () => {
    const server = await startServer();
    server.handle('qmp_capabilities', { return: {}, delayMs: 100 });
    server.handle('query-name', { return: { name: 'vm' } });
    const started = Date.now();
    const client = await connect(server);
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
    expect(server.received[0]?.arguments).toBeUndefined();
    expect(await client.execute('query-name')).toEqual({ name: 'vm' });
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'query-name']);
  });

  it('fails connect with QmpConnectError(negotiation) when qmp_capabilities is refused', async () => {
    const server = await startServer();
    server.handle('qmp_capabilities', { error: { class: 'GenericError', desc: 'nope' } });
    const client = new QmpClient();
    const error = await rejectionOf(client.connect({ path: server.path }));
    expect(error).toBeInstanceOf(QmpConnectError);
    expect(error).toMatchObject({ phase: 'negotiation', target: `unix:${server.path}` });
    expect((error as QmpConnectError).cause).toBeInstanceOf(QmpCommandError);
    expect((error as QmpConnectError).cause).toMatchObject({ errorClass: 'GenericError', command: 'qmp_capabilities' });
    expect(client.state).toBe('closed');
    expect(await client.closed).toBe(error);
  });

  it('routes replies that come out of order by id', async () => {
    const server = await startServer();
    server.handle('first', { noReply: true });
    server.handle('second', { noReply: true });
    server.handle('third', { return: 3 });
    const client = await connect(server);
    const first = client.execute('first');
    const second = client.execute('second');
    const third = client.execute('third');
    const [a, b] = await Promise.all([server.waitForCommand('first'), server.waitForCommand('second')]);
    expect(await third).toBe(3);
    server.reply(b.id, { return: 'two' });
    server.reply(a.id, { return: 'one' });
    expect(await Promise.all([first, second])).toEqual(['one', 'two']);
  });

  it('rejects an error reply with QmpCommandError keeping class, desc, command and arguments', async () => {
    const server = await startServer();
    server.handle('device_del', { error: { class: 'DeviceNotFound', desc: "Device 'x' not found" } });
    const client = await connect(server);
    const error = await rejectionOf(client.execute('device_del', { id: 'x' }));
    expect(error).toBeInstanceOf(QmpCommandError);
    expect(error).toBeInstanceOf(QmpError);
    expect(error).toMatchObject({
      name: 'QmpCommandError',
      errorClass: 'DeviceNotFound',
      desc: "Device 'x' not found",
      command: 'device_del',
      args: { id: 'x' },
    });
    expect((error as Error).message).toContain('device_del');

    const unknown = await rejectionOf(client.execute('no-such-command'));
    expect(unknown).toMatchObject({ errorClass: 'CommandNotFound', command: 'no-such-command' });
    expect(client.state).toBe('running');
  });

  it('throws at once on programmer errors', async () => {
    const server = await startServer();
    const client = await connect(server);
    expect(() => client.execute('')).toThrow(TypeError);
    expect(() => client.execute('bad name')).toThrow(/bad name/);
    expect(() => client.execute('x', [] as unknown as Record<string, unknown>)).toThrow(TypeError);
    expect(() => client.execute('x', { n: 1n })).toThrow(/JSON/);
    expect(() => client.execute('x', undefined, { timeoutMs: -1 })).toThrow(RangeError);
    expect(() => client.connect({ path: server.path })).toThrow(/connects once/);
    expect(() => new QmpClient().connect({ path: '' })).toThrow(TypeError);
    expect(() => new QmpClient().connect({ host: 'localhost', port: 70000 })).toThrow(RangeError);
    await expect(client.pmemsave(-1, 1, 'f')).rejects.toThrow(RangeError);
    expect(server.received.map((c) => c.execute)).toEqual(['qmp_capabilities']);
  });
});

describe('QmpClient connect failures', () => {
  it('times out without a greeting (QmpConnectError phase greeting, cause QmpTimeoutError)', async () => {
    const server = await startServer({ greeting: false });
    const timers = countingTimers();
    const client = new QmpClient({ timers });
    const started = Date.now();
    const error = await rejectionOf(client.connect({ path: server.path }, { timeoutMs: 150 }));
    expect(Date.now() - started).toBeLessThan(2000);
    expect(error).toBeInstanceOf(QmpConnectError);
    expect(error).toMatchObject({ phase: 'greeting' });
    expect((error as Error).cause).toBeInstanceOf(QmpTimeoutError);
    expect((error as Error).cause).toMatchObject({ operation: 'greeting', timeoutMs: 150 });
    expect(client.state).toBe('closed');
    expect(timers.live).toBe(0);
    await sleep(20);
    expect(server.connectionCount).toBe(0); // the socket was closed
  });

  it('rejects a greeting that is not QMP with a bounded excerpt', async () => {
    const server = await startServer({ greeting: `{"hello": "${'x'.repeat(10_000)}"}\n` });
    const error = await rejectionOf(QmpClient.connect({ path: server.path }, { timeoutMs: 1000 }));
    expect(error).toMatchObject({ name: 'QmpConnectError', phase: 'greeting' });
    const cause = (error as Error).cause as QmpProtocolError;
    expect(cause).toBeInstanceOf(QmpProtocolError);
    expect(cause.reason).toBe('bad-greeting');
    expect(cause.excerpt.length).toBeLessThan(200);
    expect(cause.lineBytes).toBeGreaterThan(10_000);
    expect(cause.message.length).toBeLessThan(400);
  });

  it('reports a connection closed before the greeting', async () => {
    const server = await startServer({ greeting: false });
    const pending = rejectionOf(QmpClient.connect({ path: server.path }, { timeoutMs: 2000 }));
    await server.waitForConnection();
    server.dropClient();
    const error = await pending;
    expect(error).toMatchObject({ name: 'QmpConnectError', phase: 'greeting' });
    expect((error as Error).cause).toBeInstanceOf(QmpDisconnectedError);
  });

  it('reports a missing socket as QmpConnectError(socket) with the errno cause', async () => {
    const error = await rejectionOf(QmpClient.connect({ path: '/nonexistent/eve-diag/qmp.sock' }));
    expect(error).toBeInstanceOf(QmpConnectError);
    expect(error).toMatchObject({ phase: 'socket', target: 'unix:/nonexistent/eve-diag/qmp.sock' });
    expect((error as Error).cause).toMatchObject({ code: 'ENOENT' });
  });

  it('aborts connect on its signal with QmpAbortError', async () => {
    const server = await startServer({ greeting: false });
    const controller = new AbortController();
    const client = new QmpClient();
    const pending = rejectionOf(client.connect({ path: server.path }, { signal: controller.signal, timeoutMs: 5000 }));
    await server.waitForConnection();
    controller.abort(new Error('operator gave up'));
    const error = await pending;
    expect(error).toBeInstanceOf(QmpAbortError);
    expect((error as Error).cause).toMatchObject({ message: 'operator gave up' });
    expect(client.state).toBe('closed');
  });

  it('abandons connect when close() is called', async () => {
    const server = await startServer({ greeting: false });
    const client = new QmpClient();
    const pending = rejectionOf(client.connect({ path: server.path }, { timeoutMs: 5000 }));
    await server.waitForConnection();
    await client.close();
    expect(await pending).toBeInstanceOf(QmpConnectError);
    expect(client.state).toBe('closed');
    expect(await client.closed).toBeUndefined();
  });
});

describe('QmpClient timeouts and aborts', () => {
  it('times out a slow command, then ignores its late reply', async () => {
    const server = await startServer();
    server.handle('slow', { noReply: true });
    server.handle('fast', { return: 'ok' });
    const timers = countingTimers();
    const client = await connect(server, { timers });
    const error = await rejectionOf(client.execute('slow', { n: 1 }, { timeoutMs: 50 }));
    expect(error).toBeInstanceOf(QmpTimeoutError);
    expect(error).toMatchObject({ command: 'slow', operation: 'slow', timeoutMs: 50 });
    expect(timers.live).toBe(0);

    const slow = await server.waitForCommand('slow');
    server.reply(slow.id, { return: 'too late' });
    expect(await client.execute('fast')).toBe('ok');
    expect(client.stats.lateReplies).toBe(1);
    expect(client.state).toBe('running');
  });

  it('uses the client default timeout', async () => {
    const server = await startServer();
    server.handle('slow', { return: {}, delayMs: 500 });
    const client = await connect(server, { defaultTimeoutMs: 30 });
    await expect(client.execute('slow')).rejects.toMatchObject({ name: 'QmpTimeoutError', timeoutMs: 30 });
  });

  it('aborts a pending command on its signal, and refuses an already aborted one without sending it', async () => {
    const server = await startServer();
    server.handle('slow', { noReply: true });
    const timers = countingTimers();
    const client = await connect(server, { timers });
    const controller = new AbortController();
    const pending = rejectionOf(client.execute('slow', undefined, { signal: controller.signal, timeoutMs: 5000 }));
    await server.waitForCommand('slow');
    controller.abort('enough');
    const error = await pending;
    expect(error).toBeInstanceOf(QmpAbortError);
    expect(error).toMatchObject({ operation: 'slow', cause: 'enough' });
    expect(timers.live).toBe(0);

    const sent = server.received.length;
    await expect(client.execute('slow', undefined, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(QmpAbortError);
    await sleep(20);
    expect(server.received.length).toBe(sent);
    expect(client.state).toBe('running');
  });
});

describe('QmpClient disconnection', () => {
  it('rejects every pending command with QmpDisconnectedError when the socket drops', async () => {
    const server = await startServer();
    for (const name of ['a', 'b', 'c']) server.handle(name, { noReply: true });
    const timers = countingTimers();
    const client = await connect(server, { timers });
    const pending = ['a', 'b', 'c'].map((name) => rejectionOf(client.execute(name)));
    await server.waitForCommand('c');
    server.dropClient();
    const errors = await Promise.all(pending);
    for (const [i, error] of errors.entries()) {
      expect(error).toBeInstanceOf(QmpDisconnectedError);
      expect(error).toMatchObject({ command: ['a', 'b', 'c'][i] });
    }
    expect(timers.live).toBe(0);
    expect(await client.closed).toBeInstanceOf(QmpDisconnectedError);
    expect(client.state).toBe('closed');
    await expect(client.execute('a')).rejects.toBeInstanceOf(QmpDisconnectedError);
  });

  it('rejects pending commands on close()', async () => {
    const server = await startServer();
    server.handle('hang', { noReply: true });
    const client = await connect(server);
    const pending = rejectionOf(client.execute('hang'));
    await server.waitForCommand('hang');
    await client.close();
    const error = await pending;
    expect(error).toBeInstanceOf(QmpDisconnectedError);
    expect((error as Error).cause).toBeUndefined();
  });

  it('treats a garbage line as a protocol error: closes and rejects pending commands', async () => {
    const server = await startServer();
    server.handle('hang', { noReply: true });
    const client = await connect(server);
    const pending = rejectionOf(client.execute('hang'));
    await server.waitForCommand('hang');
    await server.sendRaw('this is {not json\r\n');
    const error = await pending;
    expect(error).toBeInstanceOf(QmpDisconnectedError);
    const cause = (error as Error).cause;
    expect(cause).toBeInstanceOf(QmpProtocolError);
    expect(cause).toMatchObject({ reason: 'bad-json', excerpt: JSON.stringify('this is {not json') });
    expect(await client.closed).toBe(cause);
    expect(client.state).toBe('closed');
  });

  it.each([
    ['a JSON array', '[1, 2, 3]', 'bad-message'],
    ['a reply without id', '{"return": {}}', 'bad-message'],
    ['a second greeting', JSON.stringify({ QMP: { version: {}, capabilities: [] } }), 'bad-message'],
    ['an error without class', '{"error": {"desc": "x"}, "id": "eve-diag:2"}', 'bad-message'],
    ['an event without a name', '{"event": 42}', 'bad-message'],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 'bad-json'],
  ])('closes on %s', async (_label, line, reason) => {
    const server = await startServer();
    const client = await connect(server);
    await server.sendRaw(Buffer.concat([Buffer.from(line), Buffer.from('\n')]));
    const closedWith = await client.closed;
    expect(closedWith).toBeInstanceOf(QmpProtocolError);
    expect(closedWith).toMatchObject({ reason });
    expect((closedWith as QmpProtocolError).excerpt.length).toBeLessThan(200);
  });

  it('ignores replies to ids it never sent', async () => {
    const server = await startServer();
    server.handle('x', { return: 1 });
    const client = await connect(server);
    await server.sendRaw('{"return": {}, "id": "someone-else"}\r\n{"return": {}, "id": 7}\r\n');
    expect(await client.execute('x')).toBe(1);
    expect(client.stats.lateReplies).toBe(2);
  });

  it('closes on a line longer than maxLineBytes without buffering the flood', async () => {
    const server = await startServer();
    server.handle('hang', { noReply: true });
    const limit = 64 * 1024;
    const client = await connect(server, { maxLineBytes: limit });
    const pending = rejectionOf(client.execute('hang'));
    await server.waitForCommand('hang');
    const written = await server.flood({ maxBytes: 256 * 1024 * 1024 });
    // The client hung up after `limit` bytes; what was written beyond sat in socket buffers.
    expect(written).toBeLessThan(limit + 8 * 1024 * 1024);
    const error = await pending;
    expect(error).toBeInstanceOf(QmpDisconnectedError);
    const cause = (error as Error).cause as QmpProtocolError;
    expect(cause).toBeInstanceOf(QmpProtocolError);
    expect(cause.reason).toBe('line-too-long');
    expect(cause.lineBytes).toBeGreaterThan(limit);
    expect(cause.excerpt.length).toBeLessThan(200);
  });

  it('enforces the 16 MiB default limit and accepts a large line below it', async () => {
    const server = await startServer();
    const big = 'x'.repeat(4 * 1024 * 1024);
    server.handle('big', { return: big });
    const client = await connect(server);
    expect(await client.execute('big')).toBe(big);
    const written = await server.flood({ maxBytes: 512 * 1024 * 1024, chunkBytes: 1024 * 1024 });
    expect(written).toBeGreaterThanOrEqual(16 * 1024 * 1024);
    expect(written).toBeLessThan(16 * 1024 * 1024 + 8 * 1024 * 1024);
    expect(await client.closed).toMatchObject({ name: 'QmpProtocolError', reason: 'line-too-long' });
  });
});

describe('QmpClient events', () => {
  function stopEmitsEvent(server: FakeQmpServer): void {
    // QEMU sends the STOP event before the reply to `stop` (seen with QEMU 7.2).
    server.handle('stop', (_cmd, s) => {
      s.emitEvent('STOP');
      return { return: {} };
    });
    server.handle('cont', (_cmd, s) => {
      s.emitEvent('RESUME');
      return { return: {} };
    });
  }

  it('delivers an event to a waitEvent registered before the command', async () => {
    const server = await startServer();
    stopEmitsEvent(server);
    const timers = countingTimers();
    const client = await connect(server, { timers });
    const stopped = client.waitEvent('STOP');
    await client.stop();
    const event = await stopped;
    expect(event.event).toBe('STOP');
    expect(event.data).toEqual({});
    expect(event.timestamp?.seconds).toBeGreaterThan(1_600_000_000);
    expect(timers.live).toBe(0);
  });

  it('misses an event that came with the reply when the listener is registered after the command', async () => {
    // This is why waitEvent()/events() register synchronously and must be called before the command.
    const server = await startServer();
    stopEmitsEvent(server);
    const client = await connect(server);
    await client.stop();
    await expect(client.waitEvent('STOP', { timeoutMs: 100 })).rejects.toBeInstanceOf(QmpTimeoutError);
  });

  it('delivers events sent during negotiation to listeners registered before connect', async () => {
    const server = await startServer();
    server.handle('qmp_capabilities', (_cmd, s) => {
      s.emitEvent('EARLY');
      return { return: {} };
    });
    const client = new QmpClient();
    clients.push(client);
    const early = client.waitEvent('EARLY');
    await client.connect({ path: server.path });
    expect((await early).event).toBe('EARLY');
  });

  it('waitEvent honours its filter, timeout and signal', async () => {
    const server = await startServer();
    const client = await connect(server);
    const wanted = client.waitEvent('DEVICE_DELETED', { filter: (e) => e.data['device'] === 'b' });
    server.emitEvent('DEVICE_DELETED', { device: 'a' });
    server.emitEvent('DEVICE_DELETED', { device: 'b' });
    expect((await wanted).data).toEqual({ device: 'b' });

    await expect(client.waitEvent('NEVER', { timeoutMs: 20 })).rejects.toMatchObject({
      name: 'QmpTimeoutError',
      operation: 'event NEVER',
    });
    await expect(client.waitEvent('NEVER', { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(QmpAbortError);
  });

  it('delivers events in order to on() listeners, including "*", until unsubscribed', async () => {
    const server = await startServer();
    stopEmitsEvent(server);
    const client = await connect(server);
    const seen: string[] = [];
    const all: string[] = [];
    const off = client.on(['STOP', 'RESUME'], (e) => {
      seen.push(e.event);
    });
    client.on('*', async (e) => {
      await sleep(1); // a slow async listener is awaited, one event at a time
      all.push(e.event);
    });
    const resumed = client.waitEvent('RESUME');
    await client.stop();
    await client.cont();
    await resumed;
    server.emitEvent('RESET');
    await client.waitEvent('RESET');
    await sleep(30);
    expect(seen).toEqual(['STOP', 'RESUME']);
    expect(all).toEqual(['STOP', 'RESUME', 'RESET']);

    off();
    const stopped = client.waitEvent('STOP');
    await client.stop();
    await stopped;
    await sleep(10);
    expect(seen).toEqual(['STOP', 'RESUME']);
  });

  it('reports a throwing listener without disturbing others', async () => {
    const server = await startServer();
    const failures: unknown[] = [];
    const client = await connect(server, { onListenerError: (error) => failures.push(error) });
    client.on('X', () => {
      throw new Error('listener bug');
    });
    const got = client.waitEvent('X');
    server.emitEvent('X');
    await got;
    await sleep(10);
    expect(failures).toMatchObject([{ message: 'listener bug' }]);
    expect(client.state).toBe('running');
  });

  it('gives each listener a bounded queue that drops the oldest', async () => {
    const server = await startServer();
    const client = await connect(server, { eventQueueSize: 3 });
    const slow = client.events('TICK');
    const small = client.events('TICK', { maxQueue: 1 });
    for (let i = 0; i < 10; i += 1) server.emitEvent('TICK', { i });
    await client.waitEvent('TICK', { filter: (e) => e.data['i'] === 9 });
    expect(slow.dropped).toBe(7);
    expect(slow.queued).toBe(3);
    expect((await slow.get()).data).toEqual({ i: 7 });
    expect(small.dropped).toBe(9);
    expect((await small.get()).data).toEqual({ i: 9 });
    slow.close();
    small.close();
  });

  it('scoped events() iterate, stop on signal, end on close() and throw on a dropped connection', async () => {
    const server = await startServer();
    stopEmitsEvent(server);
    const client = await connect(server);

    const controller = new AbortController();
    const scoped = client.events(['STOP', 'RESUME'], { signal: controller.signal });
    await client.stop();
    await client.cont();
    const got: string[] = [];
    for await (const event of scoped) {
      got.push(event.event);
      if (got.length === 2) controller.abort();
    }
    expect(got).toEqual(['STOP', 'RESUME']);
    await expect(scoped.get()).rejects.toBeInstanceOf(QmpAbortError);

    const broken = client.events('STOP');
    await client.stop();
    for await (const _event of broken) break;
    expect(broken.ended).toBe(true); // leaving the loop closed it

    const untilDrop = client.events('*');
    const collected: QmpEvent[] = [];
    const loop = (async () => {
      for await (const event of untilDrop) collected.push(event);
    })();
    server.emitEvent('LAST');
    await client.waitEvent('LAST');
    server.dropClient();
    await expect(loop).rejects.toBeInstanceOf(QmpDisconnectedError);
    expect(collected.map((e) => e.event)).toEqual(['LAST']);

    const server2 = await startServer();
    const client2 = await connect(server2);
    const untilClose = client2.events('*');
    const loop2 = (async () => {
      for await (const _event of untilClose) {
        // nothing arrives
      }
      return 'ended';
    })();
    await client2.close();
    expect(await loop2).toBe('ended');
    await expect(client2.waitEvent('X')).rejects.toBeInstanceOf(QmpDisconnectedError);
  });

  it('ends a listener whose filter throws, with that error as the cause', async () => {
    const server = await startServer();
    const client = await connect(server);
    const listener = client.events('X', {
      filter: () => {
        throw new Error('filter bug');
      },
    });
    const pending = rejectionOf(listener.get());
    server.emitEvent('X');
    const error = await pending;
    expect(error).toBeInstanceOf(QmpAbortError);
    expect((error as Error).cause).toMatchObject({ message: 'filter bug' });
    expect(client.state).toBe('running');
  });
});
