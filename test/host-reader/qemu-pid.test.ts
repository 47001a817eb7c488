import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { addBridgedSocket, removeBridgedSocket } from '../../host-reader/libvirt/bridged-sockets.js';
import {
  evePidFileFor,
  listeningSocketInode,
  parseProcNetUnix,
  QemuPidError,
  readPidFile,
  resolveQemuPid,
} from '../../host-reader/qemu-pid.js';

/** The QEMU pid finders on temp files and a real unix socket this test process listens on. */

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'eve-diag-qemu-pid-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function listen(path: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  cleanups.push(() => new Promise((r) => server.close(r)));
  return server;
}

/** A pid that ran and is gone. */
function deadPid(): number {
  return Number(spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim());
}

test('parseProcNetUnix: listening sockets at the path only', () => {
  const text = [
    'Num       RefCount Protocol Flags    Type St Inode Path',
    'ffff888003a1b000: 00000002 00000000 00010000 0001 01 4242 /run/x/qmp',
    'ffff888003a1b400: 00000003 00000000 00000000 0001 03 4243 /run/x/qmp', // a connected end
    'ffff888003a1b800: 00000002 00000000 00010000 0001 01 4244 /run/y/qmp',
    'ffff888003a1bc00: 00000002 00000000 00010000 0001 01 4245 /run/with space/qmp',
    'ffff888003a1c000: 00000002 00000000 00010000 0001 01 4246',
    'garbage',
  ].join('\n');
  expect(parseProcNetUnix(text, ['/run/x/qmp'])).toEqual([4242]);
  expect(parseProcNetUnix(text, ['/run/with space/qmp'])).toEqual([4245]);
  expect(parseProcNetUnix(text, ['/nope'])).toEqual([]);
});

test('readPidFile: one pid, bounded and checked', async () => {
  const d = tempDir();
  const f = (name: string, text: string) => {
    writeFileSync(join(d, name), text);
    return join(d, name);
  };
  expect(await readPidFile(f('a', '1234\n'))).toBe(1234);
  await expect(readPidFile(f('b', 'x1234\n'))).rejects.toThrow(/not a pid/);
  await expect(readPidFile(f('c', '0\n'))).rejects.toThrow(/a pid 1\.\./);
  await expect(readPidFile(f('d', '99999999\n'))).rejects.toThrow(/not a pid/);
  await expect(readPidFile(f('e', `1\n${' '.repeat(100)}`))).rejects.toThrow(/longer than 64 bytes/);
  await expect(readPidFile(join(d, 'missing'))).rejects.toThrow(/ENOENT/);
});

test('evePidFileFor: only an EVE domain socket', () => {
  expect(evePidFileFor('/run/hypervisor/kvm/abc.1.1/qmp')).toBe('/run/hypervisor/kvm/abc.1.1/pid');
  expect(evePidFileFor('/run/hypervisor/kvm/abc.1.1/listener.qmp')).toBe('/run/hypervisor/kvm/abc.1.1/pid');
  expect(evePidFileFor('/run/hypervisor/kvm/abc.1.1/cons')).toBeUndefined();
  expect(evePidFileFor('/tmp/x/qmp')).toBeUndefined();
  expect(evePidFileFor('/tmp/root/d/qmp', '/tmp/root')).toBe('/tmp/root/d/pid');
});

describe('resolveQemuPid', () => {
  test('the owner of a socket this process listens on is this process', async () => {
    const path = join(tempDir(), 'qmp.sock');
    await listen(path);
    expect(await listeningSocketInode(path)).toBeGreaterThan(0);
    const t0 = performance.now();
    const r = await resolveQemuPid({ qmpPath: path });
    console.log(`[socket-owner] found pid ${r.pid} in ${(performance.now() - t0).toFixed(1)} ms`);
    expect(r).toMatchObject({ pid: process.pid, source: 'socket-owner' });
    expect(r.detail).toMatch(new RegExp(`^owner of ${path} \\(socket inode \\d+\\)$`));
  });

  test('a pidfile that names the socket holder wins; a stale or foreign one falls back to the owner', async () => {
    const d = tempDir();
    const path = join(d, 'qmp.sock');
    await listen(path);
    const pidFile = join(d, 'pid');
    writeFileSync(pidFile, `${process.pid}\n`);
    expect(await resolveQemuPid({ qmpPath: path, pidFile })).toMatchObject({ pid: process.pid, source: 'pidfile', detail: `pidfile ${pidFile}` });

    const dead = deadPid();
    writeFileSync(pidFile, `${dead}\n`);
    expect(await resolveQemuPid({ qmpPath: path, pidFile })).toMatchObject({ pid: process.pid, source: 'socket-owner' });

    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    cleanups.push(() => {
      other.kill('SIGKILL');
    });
    writeFileSync(pidFile, `${other.pid}\n`);
    expect(await resolveQemuPid({ qmpPath: path, pidFile })).toMatchObject({ pid: process.pid, source: 'socket-owner' });
  });

  test("a libvirt bridge's socket: libvirt's pidfile without the holder check, never this process for QEMU", async () => {
    const d = tempDir();
    const path = join(d, 'qmp.sock');
    await listen(path);
    addBridgedSocket(path);
    cleanups.push(() => removeBridgedSocket(path));
    const qemu = spawn('sleep', ['30'], { stdio: 'ignore' });
    cleanups.push(() => {
      qemu.kill('SIGKILL');
    });
    const pidFile = join(d, 'vm1.pid');
    writeFileSync(pidFile, `${qemu.pid}\n`);
    // That pid does not hold the socket (the bridge, this process, does): taken anyway.
    expect(await resolveQemuPid({ qmpPath: path, pidFile })).toMatchObject({ pid: qemu.pid, source: 'pidfile' });
    writeFileSync(pidFile, `${deadPid()}\n`);
    await expect(resolveQemuPid({ qmpPath: path, pidFile })).rejects.toThrow(/is not running; .* own bridge \(libvirt\): only a pidfile tells QEMU's pid/);
  });

  test("EVE's pidfile beside the domain's qmp socket", async () => {
    const root = tempDir();
    const dom = join(root, '0b5cd8f4-1f2a-4c3b-9d7e-abcdefabcdef.1.1');
    mkdirSync(dom);
    await listen(join(dom, 'qmp'));
    writeFileSync(join(dom, 'pid'), `${process.pid}`);
    expect(await resolveQemuPid({ qmpPath: join(dom, 'qmp'), eveRoot: root })).toMatchObject({ pid: process.pid, source: 'pidfile' });
  });

  test('an explicit pid is taken as is if it runs; failures say what was tried', async () => {
    expect(await resolveQemuPid({ qmpPath: '/nowhere', pid: process.pid })).toMatchObject({ pid: process.pid, source: 'explicit' });
    const dead = deadPid();
    await expect(resolveQemuPid({ qmpPath: '/nowhere', pid: dead })).rejects.toThrow(`configured pid ${dead}: no such process`);
    await expect(resolveQemuPid({ qmpPath: '/nowhere', pid: -1 })).rejects.toBeInstanceOf(RangeError);
    const d = tempDir();
    writeFileSync(join(d, 'pid'), 'garbage');
    const err = await resolveQemuPid({ qmpPath: join(d, 'qmp.sock'), pidFile: join(d, 'pid') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuPidError);
    expect((err as QemuPidError).attempts).toEqual([
      expect.stringMatching(/^pidfile .*\/pid: .*not a pid/),
      expect.stringMatching(/^no listening unix socket bound at .*qmp\.sock in \/proc\/net\/unix/),
    ]);
  });
});
