import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LibvirtError, Virsh } from '../../../host-reader/libvirt/virsh.js';

/**
 * The virsh runner against a stand-in `virsh` (a shell script that prints what libvirt's virsh
 * prints), for what the real one in test/e2e/libvirt.guest.test.ts does not show: libvirt's
 * errors, a virsh that hangs, one that floods, one that is missing, and its argv.
 */
let dir: string;
let argvLog: string;
const ref = { domain: 'vm1', uri: 'qemu:///system' };
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-virsh-test-'));
  argvLog = join(dir, 'argv');
  const script = `#!/bin/sh
printf '%s\\n' "$@" > '${argvLog}'
case "$*" in
  *query-status*) echo '{"return":{"status":"running","running":true},"id":"libvirt-1"}'; echo ;;
  *stopped*) echo 'error: Requested operation is not valid: domain is not running' >&2; exit 1 ;;
  *hang*) sleep 30 ;;
  *flood*) yes '{"return":' | head -c 20000000; exit 0 ;;
  *dumpxml*) echo "<domain><name>vm1</name></domain>" ;;
  *event*) echo "event STOP at 1.000000 for domain 'vm1': <null>"; echo "event 'lifecycle' for domain 'vm1': Stopped Destroyed"; exit 3 ;;
esac
`;
  await writeFile(join(dir, 'virsh'), script);
  await chmod(join(dir, 'virsh'), 0o755);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const virsh = (o: { timeoutMs?: number; binary?: string } = {}) => new Virsh({ ref, binary: o.binary ?? join(dir, 'virsh'), ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) });

describe('Virsh', () => {
  it('runs qemu-monitor-command with an argv: the URI, --domain and the command without an id', async () => {
    expect(await virsh().qmp({ execute: 'query-status' })).toEqual({ return: { status: 'running', running: true } });
    expect((await readFile(argvLog, 'utf8')).trim().split('\n')).toEqual(['-q', '-c', 'qemu:///system', 'qemu-monitor-command', '--domain', 'vm1', '--cmd', '{"execute":"query-status"}']);
  });

  it("says libvirt's reason, and whether the domain is not running", async () => {
    const e = (await virsh().qmp({ execute: 'stopped' }).catch((err: unknown) => err)) as LibvirtError;
    expect(e).toBeInstanceOf(LibvirtError);
    expect(e.notRunning).toBe(true);
    expect(e.message).toBe('libvirt qemu-monitor-command stopped: Requested operation is not valid: domain is not running');
  });

  it('bounds time and output, and names a missing virsh', async () => {
    await expect(virsh({ timeoutMs: 300 }).qmp({ execute: 'hang' })).rejects.toThrow(/did not answer within 300 ms/);
    await expect(virsh().qmp({ execute: 'flood' })).rejects.toThrow(/more than 16777216 bytes/);
    await expect(virsh({ binary: join(dir, 'no-virsh') }).dumpXml()).rejects.toThrow(/not found \(apt-get install libvirt-clients\)/);
  });

  it('follows both event streams and says when virsh ended', async () => {
    const seen: string[] = [];
    const ended: string[] = [];
    const w = virsh().watch({
      onEvent: (e) => seen.push(e.event),
      onLifecycle: (e) => seen.push(`${e.kind} ${e.detail}`),
      onExit: (stream, detail) => ended.push(`${stream}: ${detail}`),
    });
    const end = Date.now() + 5000;
    while (ended.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    w.stop();
    expect(seen.sort()).toEqual(['STOP', 'Stopped Destroyed']);
    expect(ended.sort()).toEqual([expect.stringMatching(/^events: virsh qemu-monitor-event ended \(exit 3\)/), expect.stringMatching(/^lifecycle: virsh event ended \(exit 3\)/)]);
  });
});
