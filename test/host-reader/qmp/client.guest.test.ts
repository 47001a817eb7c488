/**
 * The QMP client against a real QEMU (TCG, no guest kernel): `-M none`, and `-M q35` sitting in SeaBIOS
 * with nothing to boot. Every QEMU started here is SIGKILLed by pid in afterEach, with an afterAll and a
 * process 'exit' backstop, and PR_SET_PDEATHSIG (setpriv) in case the worker itself is killed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  QmpClient,
  QmpCommandError,
  QmpConnectError,
  QmpDisconnectedError,
} from '../../../host-reader/qmp/index.js';

const QEMU = 'qemu-system-x86_64';
const SETPRIV = '/usr/bin/setpriv';

type Qemu = {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly dir: string;
  readonly qmpPath: string;
  readonly exited: Promise<void>;
  stderr: string;
};

const live = new Set<Qemu>();
process.on('exit', () => {
  for (const q of live) killByPid(q.pid);
});

function killByPid(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

async function startQemu(machine: 'none' | 'q35'): Promise<Qemu> {
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-qmp-'));
  const qmpPath = join(dir, 'qmp.sock');
  const args = [
    ...['-M', machine, '-accel', 'tcg', '-display', 'none', '-nodefaults', '-no-user-config'],
    ...(machine === 'q35' ? ['-m', '128'] : []),
    ...['-qmp', `unix:${qmpPath},server=on,wait=off`],
  ];
  const child = existsSync(SETPRIV)
    ? spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', QEMU, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start ${QEMU}`);
  const qemu: Qemu = {
    child,
    pid: child.pid,
    dir,
    qmpPath,
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', () => resolve())),
  };
  child.stderr?.on('data', (chunk: Buffer) => {
    if (qemu.stderr.length < 10_000) qemu.stderr += chunk.toString();
  });
  live.add(qemu);
  return qemu;
}

async function stopQemu(qemu: Qemu): Promise<void> {
  killByPid(qemu.pid);
  await qemu.exited;
  live.delete(qemu);
  await rm(qemu.dir, { recursive: true, force: true });
}

/** Connects once QEMU has created its socket (it does so during start-up). */
async function connectWhenReady(qemu: Qemu, deadlineMs = 20_000): Promise<QmpClient> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await QmpClient.connect({ path: qemu.qmpPath }, { timeoutMs: 5000 });
    } catch (error) {
      const retry = error instanceof QmpConnectError && error.phase === 'socket';
      if (!retry || Date.now() > deadline || qemu.child.exitCode !== null || qemu.child.signalCode !== null) {
        throw new Error(`QMP connect failed; QEMU stderr: ${qemu.stderr}`, { cause: error });
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

afterAll(async () => {
  await Promise.all([...live].map(stopQemu));
});

describe.each(['none', 'q35'] as const)('QmpClient against qemu-system-x86_64 -M %s', (machine) => {
  let qemu: Qemu | undefined;
  let client: QmpClient | undefined;

  beforeEach(async () => {
    qemu = await startQemu(machine);
    client = await connectWhenReady(qemu);
  });

  afterEach(async () => {
    await client?.close();
    if (qemu !== undefined) await stopQemu(qemu);
    client = undefined;
    qemu = undefined;
  });

  function session(): { qemu: Qemu; client: QmpClient } {
    if (qemu === undefined || client === undefined) throw new Error('beforeEach did not run');
    return { qemu, client };
  }

  it('reports the version from the greeting, query-version and HMP alike', async () => {
    const { client } = session();
    const version = client.version;
    expect(version?.major).toBeGreaterThanOrEqual(7);
    const reply = await client.execute<{ qemu: { major: number; minor: number; micro: number }; package: string }>(
      'query-version',
    );
    expect(reply.qemu).toEqual({ major: version?.major, minor: version?.minor, micro: version?.micro });
    expect(reply.package).toBe(version?.package);
    const text = await client.hmp('info version');
    expect(text).toContain(`${version?.major}.${version?.minor}.${version?.micro}`);
  });

  it('reads query-status, then stop yields STOP and paused, cont yields RESUME and running', async () => {
    const { client } = session();
    expect(await client.queryStatus()).toMatchObject({ running: true, status: 'running' });

    const stopped = client.waitEvent('STOP', { timeoutMs: 10_000 });
    await client.stop();
    expect((await stopped).event).toBe('STOP');
    expect(await client.queryStatus()).toMatchObject({ running: false, status: 'paused' });

    const resumed = client.waitEvent('RESUME', { timeoutMs: 10_000 });
    await client.cont();
    expect((await resumed).event).toBe('RESUME');
    expect(await client.queryStatus()).toMatchObject({ running: true, status: 'running' });
  });

  it('rejects an unknown command with QmpCommandError(CommandNotFound) and stays usable', async () => {
    const { client } = session();
    const error = await client.execute('eve-diag-no-such-command', { x: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpCommandError);
    expect(error).toMatchObject({
      errorClass: 'CommandNotFound',
      command: 'eve-diag-no-such-command',
      args: { x: 1 },
    });
    expect((await client.queryStatus()).status).toBe('running');
  });

  it('rejects a pending command cleanly when QEMU is SIGKILLed under it', async () => {
    const { qemu, client } = session();
    // Freeze QEMU so the command is certainly still pending when the kill lands.
    killByPid(qemu.pid, 'SIGSTOP');
    const pending = client.queryStatus({ timeoutMs: 60_000 }).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    killByPid(qemu.pid, 'SIGKILL');
    const error = await pending;
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error).toBeInstanceOf(QmpDisconnectedError);
    expect(error).toMatchObject({ command: 'query-status' });
    expect(await client.closed).toBeInstanceOf(QmpDisconnectedError);
    expect(client.state).toBe('closed');
    await expect(client.queryStatus()).rejects.toBeInstanceOf(QmpDisconnectedError);
  });

  it('quit ends QEMU and the session', async () => {
    const { qemu, client } = session();
    const shutdown = client.waitEvent('SHUTDOWN', { timeoutMs: 10_000 }).catch((e: unknown) => e);
    await client.quit();
    await qemu.exited;
    expect(qemu.child.exitCode).toBe(0);
    expect(await shutdown).toMatchObject({ event: 'SHUTDOWN' });
    await client.closed;
    expect(client.state).toBe('closed');
  });

  if (machine === 'q35') {
    it('pmemsave dumps guest RAM; SeaBIOS leaves its RSDP in the F-segment', async () => {
      const { qemu, client } = session();
      const file = join(qemu.dir, 'fseg.bin');
      // DESIGN fact 7: the RSDP sits near 0xF59E0. SeaBIOS may still be starting: poll for it.
      const deadline = Date.now() + 30_000;
      let found = -1;
      while (found < 0 && Date.now() < deadline) {
        await client.pmemsave(0xf0000, 0x10000, file);
        expect((await stat(file)).size).toBe(0x10000);
        found = (await readFile(file)).indexOf('RSD PTR ');
        if (found < 0) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(found).toBeGreaterThanOrEqual(0);
      expect(found % 16).toBe(0); // ACPI 6.5 section 5.2.5.1: RSDP on a 16-byte boundary
    });
  }
});
