import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildAgentBundle } from '../../build/agent-bundle.js';
import { register as registerBake } from '../../cli/bake.js';
import { UsageError } from '../../cli/usage-error.js';
import { readInstallAssets, type InstallAssets } from '../../bake/assets.js';
import { gfQuote, GuestfishSession, IMAGE_PATHS as P, libguestfsEnv } from '../../bake/image.js';
import { validateFile } from '../../guest-agent/config.js';

/**
 * `eve-diag bake image` on real disk images with the real libguestfs (TCG appliance, DESIGN fact 11).
 * The images are small busybox root filesystems made without libguestfs (`mkfs.ext4 -d`, our own MBR,
 * `qemu-img convert`):
 *   A  raw, MBR partition 1, /lib/systemd/systemd placeholder -> systemd; Node agent; --partition 1
 *   B  raw, bare ext4, /etc/init.d and /etc/rc?.d, a stale S01 link  -> sysvinit; --sh
 *   C  qcow2, a boot partition and the root in partition 2, /sbin/openrc, /etc/crontabs/root -> OpenRC; --sh, auto
 *   F  raw, /etc/sysctl.d is a file: the write fails, the image must stay byte for byte the same
 * The four bakes run at once (each appliance is one TCG vCPU); one read-only guestfish session then
 * looks inside A, B and C. Each bake starts an appliance (15-40 s here), hence the loose timeouts.
 */

const SECTOR = 512;
let dir: string;
let bundle: string;
let assets: InstallAssets;
const img = (n: string) => join(dir, n);

interface Run {
  code: number;
  out: string[];
  err: string[];
  ms: number;
}
const runs = new Map<string, Run>();

/** `eve-diag bake image ARGS` through the real command registration, stdout and stderr captured. */
async function bake(args: string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const p = new Command('eve-diag').exitOverride();
  registerBake(p, (s) => out.push(s), (s) => err.push(s));
  const t0 = Date.now();
  let code = 0;
  try {
    await p.parseAsync(['bake', 'image', ...args], { from: 'user' });
  } catch (e) {
    err.push(`eve-diag: ${(e as Error).message}`);
    code = e instanceof UsageError ? 2 : 1;
  }
  return { code, out, err, ms: Date.now() - t0 };
}

type Tree = Record<string, string | { link: string } | { dir: true }>;

/** A busybox root filesystem in a host directory (scripts 0755, other files 0644). */
function rootfs(name: string, extra: Tree): string {
  const root = join(dir, name);
  mkdirSync(join(root, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  const tree: Tree = {
    '/bin/sh': { link: 'busybox' },
    '/sbin/init': { link: '../bin/busybox' },
    '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n',
    '/etc/hostname': `${name}\n`,
    ...extra,
  };
  for (const [path, what] of Object.entries(tree)) {
    const at = join(root, path);
    mkdirSync(dirname(at), { recursive: true });
    if (typeof what === 'string') writeFileSync(at, what, { mode: what.startsWith('#!') ? 0o755 : 0o644 });
    else if ('link' in what) symlinkSync(what.link, at);
    else mkdirSync(at, { recursive: true });
  }
  return root;
}

/** An MBR with Linux partitions [startSector, sectors]. */
function mbr(parts: Array<[number, number]>): Buffer {
  const b = Buffer.alloc(SECTOR);
  parts.forEach(([start, count], i) => {
    const e = 446 + 16 * i;
    b[e + 4] = 0x83;
    b.writeUInt32LE(start, e + 8);
    b.writeUInt32LE(count, e + 12);
  });
  b.writeUInt16LE(0xaa55, 510);
  return b;
}

/** A sparse image file of `mib` MiB; ext4 filesystems from host directories at byte offsets. */
function image(path: string, mib: number, table: Buffer | undefined, fss: Array<{ root: string; offset: number; mib: number }>): void {
  writeFileSync(path, table ?? Buffer.alloc(0));
  execFileSync('truncate', ['-s', `${mib}M`, path]);
  for (const fs of fss) {
    execFileSync('mkfs.ext4', ['-q', '-F', '-E', `offset=${fs.offset}`, '-d', fs.root, path, `${fs.mib}M`], { stdio: ['ignore', 'ignore', 'pipe'] });
  }
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/** A System.map as a kernel build writes it (link-time addresses), big enough not to be a placeholder. */
const systemMapText = (n: number) =>
  ['ffffffff81000000 T _text', 'ffffffff81000000 T _stext', ...Array.from({ length: n }, (_, i) => `${(0xffffffff81001000n + BigInt(i) * 0x40n).toString(16)} T fn_${i}`), 'ffffffff82000000 T _etext', 'ffffffff82a00000 D linux_banner', ''].join('\n');
const SYSTEM_MAP = systemMapText(400);
const SYSTEM_MAP_OLD = systemMapText(10);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-bake-image-guest-'));
  bundle = (await buildAgentBundle({ outfile: img('eve-diag-agent.js') })).code;
  assets = await readInstallAssets();
  const rcDirs: Tree = Object.fromEntries(['0', '1', '2', '3', '4', '5', '6', 'S'].map((l) => [`/etc/rc${l}.d`, { dir: true }]));

  // A: systemd (placeholder binary), partition 1 of an MBR disk.
  const a = rootfs('a', {
    '/lib/systemd/systemd': '#!/bin/sh\n# placeholder\n',
    '/etc/systemd/system': { dir: true },
    // Two kernels' maps: the newer one (by version, 10 > 9) is taken.
    '/boot/System.map-6.1.0-9-amd64': SYSTEM_MAP_OLD,
    '/boot/System.map-6.1.0-10-amd64': SYSTEM_MAP,
  });
  image(img('a.img'), 64, mbr([[2048, 129024]]), [{ root: a, offset: 2048 * SECTOR, mib: 63 }]);

  // B: sysvinit, bare ext4, a stale runlevel link from an earlier install.
  const b = rootfs('b', { '/etc/init.d/rcS': '#!/bin/sh\n', ...rcDirs, '/etc/rc2.d/S01eve-diag-agent': { link: '../init.d/eve-diag-agent' }, '/etc/cron.d': { dir: true } });
  image(img('b.img'), 64, undefined, [{ root: b, offset: 0, mib: 64 }]);

  // C: OpenRC (Alpine-like: busybox init, /sbin/openrc, busybox crond's /etc/crontabs), root in
  // partition 2 behind a boot partition; converted to qcow2.
  const boot = join(dir, 'boot');
  mkdirSync(join(boot, 'grub'), { recursive: true });
  writeFileSync(join(boot, 'grub', 'grub.cfg'), '# nothing\n');
  const c = rootfs('c', {
    '/sbin/openrc': '#!/bin/sh\n# placeholder\n',
    '/etc/init.d': { dir: true },
    '/etc/runlevels/default': { dir: true },
    '/etc/crontabs/root': '0 3 * * * /usr/bin/backup\n',
    // What Debian's linux-image packages ship.
    '/boot/System.map-6.1.0-10-amd64': 'ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n',
  });
  image(img('c.raw'), 64, mbr([[2048, 16384], [18432, 112640]]), [
    { root: boot, offset: 2048 * SECTOR, mib: 8 },
    { root: c, offset: 18432 * SECTOR, mib: 55 },
  ]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', img('c.raw'), img('c.qcow2')]);

  // F: a path element in the way (/etc/sysctl.d is a file): the session fails after other writes.
  const f = rootfs('f', { '/lib/systemd/systemd': '#!/bin/sh\n', '/etc/sysctl.d': 'not a directory\n' });
  image(img('f.img'), 64, undefined, [{ root: f, offset: 0, mib: 64 }]);
}, 60_000);

afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('eve-diag bake image (real libguestfs)', () => {
  let fBefore: string;
  let cInfo: { format: string; 'backing-filename'?: string };

  test('bakes four images (one fails on purpose)', async () => {
    fBefore = sha256(readFileSync(img('f.img')));
    const t0 = Date.now();
    const [a, b, c, f] = await Promise.all([
      bake(['--image', img('a.img'), '--partition', '1', '--period', '2', '--mark-period', '30', '--bundle', img('eve-diag-agent.js'), '--system-map', img('a.System.map')]),
      bake(['--image', img('b.img'), '--format', 'raw', '--sh', '--period', '2', '--mark-period', '300']),
      bake(['--image', img('c.qcow2'), '--format', 'qcow2', '--sh', '--system-map', img('c.System.map')]),
      bake(['--image', img('f.img'), '--sh']),
    ]);
    for (const [k, r] of Object.entries({ a, b, c, f })) runs.set(k, r);
    console.log(`bake image: 4 bakes at once in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${[...runs].map(([k, r]) => `${k} ${(r.ms / 1000).toFixed(1)} s`).join(', ')}`);
    for (const [k, r] of runs) console.log(`--- ${k} (exit ${r.code})\n${r.err.join('\n')}`);

    expect(a.code).toBe(0);
    expect(a.err).toContain('eve-diag: bake image: root filesystem /dev/sda1 (ext4), init systemd (systemd is in /lib/systemd or /usr/lib/systemd)');
    expect(a.err).toContain('eve-diag: bake image: warning: the image has no /usr/bin/node: the agent starts once Node >= 18 is installed there (or bake with --sh)');
    expect(a.err[0]).toMatch(/a\.img: raw, 64 MiB$/);
    expect(a.err.some((l) => /appliance up in [0-9.]+ s$/.test(l))).toBe(true);
    expect(a.err[a.err.length - 1]).toMatch(/^eve-diag: bake image: done in [0-9.]+ s$/);
    expect(a.out).toEqual([
      `${P.agent} 0755`,
      `${P.config} 0644`,
      `${P.unit} 0644`,
      `${P.sysctl} 0644`,
      `${P.systemdWants}/eve-diag-agent.service -> ${P.unit}`,
      `${img('a.System.map')} <- /boot/System.map-6.1.0-10-amd64 (403 text symbols)`,
    ]);
    expect(readFileSync(img('a.System.map'), 'utf8')).toBe(SYSTEM_MAP);

    expect(b.code).toBe(0);
    expect(b.err).toContain('eve-diag: bake image: root filesystem /dev/sda (ext4), init sysvinit (no systemd or OpenRC, /etc/init.d is there)');
    expect(b.err.filter((l) => l.includes('warning'))).toEqual([]);

    expect(c.code).toBe(0);
    expect(c.err[0]).toMatch(/c\.qcow2: qcow2, 64 MiB$/);
    expect(c.err).toContain('eve-diag: bake image: root filesystem /dev/sda2 (ext4), init openrc (/sbin/openrc is there)');
    expect(c.err.find((l) => l.includes('System.map'))).toMatch(/warning: no System\.map captured: \/boot\/System\.map-6\.1\.0-10-amd64: a placeholder System\.map/);
    expect(existsSync(img('c.System.map'))).toBe(false);

    expect(f.code).toBe(1);
    const fErr = f.err.join('\n');
    expect(fErr).toMatch(/eve-diag: guestfish failed \(exit 1\) at `mkdir-p \/etc\/sysctl\.d`:\n[^]*mkdir_p: \/etc\/sysctl\.d: a path element was not a directory\n\(LIBGUESTFS_DEBUG=1 shows the appliance's log\)\n\(.*f\.img is unchanged\)$/);
    expect(f.out).toEqual([]);
    expect(sha256(readFileSync(img('f.img')))).toBe(fBefore);

    cInfo = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', img('c.qcow2')], { encoding: 'utf8' })) as typeof cInfo;
    expect(cInfo.format).toBe('qcow2');
    expect(cInfo['backing-filename']).toBeUndefined();
  }, 420_000);

  test('inside the images (guestfish --ro): agent, service, enabling links, sysctl drop-in, modes', async () => {
    expect(runs.get('a')?.code).toBe(0);
    const gf = new GuestfishSession('guestfish', ['--ro', '--format=raw', '-a', img('a.img'), '-a', img('b.img'), '--format=qcow2', '-a', img('c.qcow2')], libguestfsEnv(process.env));
    try {
      await gf.run(['run'], 600_000);
      await gf.run(['mkmountpoint /a', 'mkmountpoint /b', 'mkmountpoint /c', 'mount-ro /dev/sda1 /a', 'mount-ro /dev/sdb /b', 'mount-ro /dev/sdc2 /c']);
      const one = async (cmd: string) => (await gf.run([cmd]))[0] as string;
      /** Mode (permission bits), owner and type of a path, not following a final symlink. */
      const stat = async (path: string) => {
        const s = Object.fromEntries((await one(`lstatns ${path}`)).split('\n').map((l) => l.split(': ') as [string, string]));
        const mode = Number(s.st_mode);
        return { type: (mode & 0o170000) === 0o120000 ? 'link' : (mode & 0o170000) === 0o100000 ? 'file' : 'other', mode: (mode & 0o7777).toString(8), uid: s.st_uid, gid: s.st_gid };
      };
      const file = async (path: string, mode: string) => {
        expect(await stat(path), path).toEqual({ type: 'file', mode, uid: '0', gid: '0' });
        return one(`cat ${path}`);
      };
      const link = async (path: string) => {
        expect((await stat(path)).type, path).toBe('link');
        return one(`readlink ${path}`);
      };
      const exists = async (path: string) => (await one(`exists ${path}`)) === 'true';

      // A: systemd, Node agent.
      expect(await one(`checksum sha256 /a${P.agent}`)).toBe(sha256(bundle));
      expect(await stat(`/a${P.agent}`)).toEqual({ type: 'file', mode: '755', uid: '0', gid: '0' });
      const config = validateFile(JSON.parse(await file(`/a${P.config}`, '644')), 'agent.json');
      expect(config).toMatchObject({ zone: '\\_TZ_.EDGA', periodMs: 2000, markPeriodMs: 30_000 });
      const unit = await file(`/a${P.unit}`, '644');
      expect(unit).toContain(`\nExecStart=/usr/bin/node ${P.agent}\n`);
      expect(unit).toContain('\nWantedBy=multi-user.target\n');
      expect(await link(`/a${P.systemdWants}/eve-diag-agent.service`)).toBe(P.unit);
      expect(await file(`/a${P.sysctl}`, '644')).toMatch(/^kernel\.sysrq = 1$/m);
      expect(await stat(`/a${P.systemdWants}`)).toMatchObject({ type: 'other', mode: '755' });
      for (const p of [P.shAgent, P.shUnit, P.cron, P.initScript]) expect(await exists(`/a${p}`), p).toBe(false);
      expect(await one('cat /a/etc/hostname')).toBe('a\n'); // the rest of the image is still there

      // B: sysvinit, sh agent.
      expect(await file(`/b${P.shAgent}`, '755')).toBe(assets.shAgent);
      expect(await file(`/b${P.initScript}`, '755')).toBe(assets.sysvinit);
      expect(await file(`/b${P.sysvinitDefaults}`, '644')).toMatch(/^EVE_DIAG_ARGS="--period 2"$/m);
      for (const l of ['2', '3', '4', '5']) expect(await link(`/b/etc/rc${l}.d/S20eve-diag-agent`)).toBe('../init.d/eve-diag-agent');
      for (const l of ['0', '1', '6']) expect(await link(`/b/etc/rc${l}.d/K01eve-diag-agent`)).toBe('../init.d/eve-diag-agent');
      expect(await exists('/b/etc/rc2.d/S01eve-diag-agent')).toBe(false);
      expect((await one('ls /b/etc/rc2.d')).split('\n')).toEqual(['S20eve-diag-agent']);
      expect((await file(`/b${P.cron}`, '644')).split('\n')).toContain(`*/5 * * * * root ${P.shAgent} mark`);
      expect(await file(`/b${P.sysctl}`, '644')).toMatch(/^kernel\.sysrq = 1$/m);
      for (const p of [P.agent, P.unit, P.shUnit, P.openrcDefault]) expect(await exists(`/b${p}`), p).toBe(false);

      // C: OpenRC, sh agent, busybox crond's table kept and extended.
      expect(await file(`/c${P.shAgent}`, '755')).toBe(assets.shAgent);
      expect(await file(`/c${P.initScript}`, '755')).toBe(assets.openrc);
      expect(await file(`/c${P.openrcConf}`, '644')).toMatch(/^EVE_DIAG_ARGS="--period 1"$/m);
      expect(await link(`/c${P.openrcDefault}`)).toBe(P.initScript);
      expect(await file(`/c${P.crontabRoot}`, '600')).toBe(`0 3 * * * /usr/bin/backup\n* * * * * ${P.shAgent} mark\n`);
      expect(await file(`/c${P.sysctl}`, '644')).toMatch(/^kernel\.sysrq = 1$/m);
      expect(await exists(`/c${P.cron}`)).toBe(false);
      // Guestfish is a shell-like language (`!cmd` and `| cmd` run a local shell): a hostile path,
      // quoted by gfQuote as bake quotes every path it is given, stays one argument of one command.
      // (Paths start with `/`: a relative one is an error that ends this session.)
      const marker = img('pwned');
      for (const path of [`/a|touch ${marker}`, `/a" | touch ${marker} #`, `/a !touch ${marker}`, `/a\n!touch ${marker}`, `/a\\" | touch ${marker}`, `/$(touch ${marker})`, `/a\r\n!touch ${marker}`]) {
        expect(await one(`exists ${gfQuote(path)}`), JSON.stringify(path)).toBe('false');
      }
      expect(existsSync(marker)).toBe(false);
      // The boot partition is untouched.
      await gf.run(['mkmountpoint /boot', 'mount-ro /dev/sdc1 /boot']);
      expect((await one('ls /boot')).split('\n').filter((x) => x !== 'lost+found')).toEqual(['grub']);
      await gf.run(['umount-all']);
      await gf.close();
    } finally {
      await gf.killAndWait();
    }
  }, 420_000);
});
