import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bakeImageCommand, type BakeImageFlags } from '../../cli/bake-image.js';
import { readInstallAssets, type InstallAssets } from '../../bake/assets.js';
import {
  BakeInputError,
  describePlan,
  detectInit,
  gfQuote,
  guestfishCommands,
  IMAGE_PATHS as P,
  libguestfsEnv,
  looksLikeRoot,
  mergeCrontab,
  mountRoot,
  parseQemuImgInfo,
  planImageInstall,
  type GuestfsRunner,
  type ImageFacts,
  type ImageOp,
  type ImagePlanOptions,
} from '../../bake/image.js';
import { validateFile } from '../../guest-agent/config.js';
import { runCli } from '../helpers/cli.js';

let dir: string;
let assets: InstallAssets;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'eve-diag-bake-image-'));
  assets = await readInstallAssets();
  writeFileSync(join(dir, 'a.img'), Buffer.alloc(4096));
  writeFileSync(join(dir, 'locked.img'), Buffer.alloc(4096));
  writeFileSync(join(dir, 'inuse.img'), Buffer.alloc(4096));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base: ImageFacts = { etc: true, sbinInit: 'missing', systemd: false, openrc: false, initD: false, rcDirs: false, cronD: false, crontabs: false, node: true };
const facts = (f: Partial<ImageFacts>): ImageFacts => ({ ...base, ...f });

describe('detectInit', () => {
  it.each<[string, Partial<ImageFacts>, string | undefined]>([
    ['Debian/Ubuntu/Fedora: /sbin/init -> systemd', { sbinInit: 'symlink', sbinInitTarget: '/lib/systemd/systemd', systemd: true, initD: true }, 'systemd'],
    ['relative link, merged /usr', { sbinInit: 'symlink', sbinInitTarget: '../lib/systemd/systemd', systemd: true }, 'systemd'],
    ['busybox rootfs with a systemd binary', { sbinInit: 'symlink', sbinInitTarget: '../bin/busybox', systemd: true, initD: true }, 'systemd'],
    ['no /sbin/init, systemd in /usr/lib', { systemd: true }, 'systemd'],
    ['Alpine: busybox init + OpenRC', { sbinInit: 'symlink', sbinInitTarget: '/bin/busybox', openrc: true, initD: true }, 'openrc'],
    ['openrc-init as /sbin/init', { sbinInit: 'symlink', sbinInitTarget: '/sbin/openrc-init', openrc: true, systemd: true }, 'openrc'],
    ['Gentoo/Devuan: sysvinit binary + OpenRC', { sbinInit: 'file', openrc: true, initD: true }, 'openrc'],
    ['Debian sysvinit-core, systemd package still installed', { sbinInit: 'file', systemd: true, initD: true }, 'sysvinit'],
    ['busybox init with /etc/init.d', { sbinInit: 'symlink', sbinInitTarget: '/bin/busybox', initD: true }, 'sysvinit'],
    ['nothing', { sbinInit: 'file' }, undefined],
  ])('%s', (_name, f, init) => {
    expect(detectInit(facts(f))?.init).toBe(init);
  });

  it('looksLikeRoot: /etc plus some init', () => {
    expect(looksLikeRoot(facts({ initD: true }))).toBe(true);
    expect(looksLikeRoot(facts({ etc: false, initD: true }))).toBe(false);
    expect(looksLikeRoot(facts({}))).toBe(false);
  });
});

function plan(o: Partial<ImagePlanOptions> & Pick<ImagePlanOptions, 'mode' | 'init'>) {
  return planImageInstall({ assets, bundle: 'BUNDLE', periodS: 1, markPeriodS: 60, nodePath: '/usr/bin/node', facts: facts({}), ...o });
}
const byPath = (ops: ImageOp[], path: string) => ops.find((o) => 'path' in o && o.path === path && (o.op === 'file' || o.op === 'symlink'));
const content = (ops: ImageOp[], path: string) => {
  const o = byPath(ops, path);
  if (o?.op !== 'file') throw new Error(`no file ${path}`);
  return o.content;
};
const kinds = (ops: ImageOp[]) => ops.map((o) => (o.op === 'remove-glob' ? `remove-glob ${o.pattern}` : `${o.op} ${o.path}`));

describe('planImageInstall: what goes into the image', () => {
  it('systemd, Node agent: bundle, agent.json, unit, wants link, sysctl; the sh agent\'s files removed', () => {
    const p = plan({ mode: 'node', init: 'systemd', periodS: 2, markPeriodS: 30 });
    expect(kinds(p.ops)).toEqual([
      `remove ${P.shAgent}`,
      `remove ${P.systemdWants}/eve-diag-heartbeat.service`,
      `remove ${P.shUnit}`,
      `remove ${P.cron}`,
      'mkdir /usr/local/lib/eve-diag',
      'mkdir /etc/eve-diag',
      'mkdir /etc/systemd/system',
      'mkdir /etc/sysctl.d',
      `mkdir ${P.systemdWants}`,
      `file ${P.agent}`,
      `file ${P.config}`,
      `file ${P.unit}`,
      `file ${P.sysctl}`,
      `symlink ${P.systemdWants}/eve-diag-agent.service`,
    ]);
    expect(describePlan(p)).toEqual([
      `${P.agent} 0755`,
      `${P.config} 0644`,
      `${P.unit} 0644`,
      `${P.sysctl} 0644`,
      `${P.systemdWants}/eve-diag-agent.service -> ${P.unit}`,
    ]);
    expect(content(p.ops, P.agent)).toBe('BUNDLE');
    expect(content(p.ops, P.unit)).toContain(`\nExecStart=/usr/bin/node ${P.agent}\n`);
    expect(content(p.ops, P.sysctl)).toBe(assets.sysctl);
    expect(content(p.ops, P.sysctl)).toMatch(/^kernel\.sysrq = 1$/m);
    expect(validateFile(JSON.parse(content(p.ops, P.config)), 'agent.json')).toMatchObject({ zone: '\\_TZ_.EDGA', periodMs: 2000, markPeriodMs: 30_000, console: '/dev/console', responder: null, syslog: true });
    expect(p.warnings).toEqual([]);
  });

  it('systemd, --sh: sh agent, heartbeat unit + link, cron.d line; the Node agent\'s files removed', () => {
    const p = plan({ mode: 'sh', init: 'systemd', periodS: 0.5, markPeriodS: 300, facts: facts({ cronD: true }) });
    expect(kinds(p.ops).filter((k) => k.startsWith('remove'))).toEqual([`remove ${P.agent}`, `remove ${P.systemdWants}/eve-diag-agent.service`, `remove ${P.unit}`]);
    expect(describePlan(p)).toEqual([
      `${P.shAgent} 0755`,
      `${P.shUnit} 0644`,
      `${P.cron} 0644`,
      `${P.sysctl} 0644`,
      `${P.systemdWants}/eve-diag-heartbeat.service -> ${P.shUnit}`,
    ]);
    expect(content(p.ops, P.shAgent)).toBe(assets.shAgent);
    expect(content(p.ops, P.shUnit)).toContain(`\nExecStart=${P.shAgent} heartbeat --period 0.5\n`);
    expect(content(p.ops, P.cron).split('\n').filter((l) => /^[0-9*]/.test(l))).toEqual([`*/5 * * * * root ${P.shAgent} mark`]);
    expect(p.warnings).toEqual([]);
  });

  it('OpenRC: init script, conf.d, the default-runlevel link', () => {
    const n = plan({ mode: 'node', init: 'openrc', nodePath: '/usr/local/bin/node' });
    expect(describePlan(n)).toEqual([`${P.agent} 0755`, `${P.config} 0644`, `${P.initScript} 0755`, `${P.openrcConf} 0644`, `${P.sysctl} 0644`, `${P.openrcDefault} -> ${P.initScript}`]);
    expect(content(n.ops, P.initScript)).toBe(assets.openrc);
    expect(content(n.ops, P.openrcConf)).toMatch(/^EVE_DIAG_NODE=\/usr\/local\/bin\/node$/m);
    expect(content(n.ops, P.openrcConf)).toMatch(/^EVE_DIAG_ARGS=""$/m);
    expect(kinds(n.ops)).toContain('mkdir /etc/runlevels/default');
    const s = plan({ mode: 'sh', init: 'openrc', periodS: 2, facts: facts({ crontabs: true }) });
    expect(describePlan(s)).toEqual([`${P.shAgent} 0755`, `${P.initScript} 0755`, `${P.openrcConf} 0644`, `${P.crontabRoot} 0600`, `${P.sysctl} 0644`, `${P.openrcDefault} -> ${P.initScript}`]);
    expect(content(s.ops, P.openrcConf)).toMatch(/^EVE_DIAG_ARGS="--period 2"$/m);
    expect(content(s.ops, P.crontabRoot)).toBe(`* * * * * ${P.shAgent} mark\n`);
  });

  it('sysvinit: init script, /etc/default, S20 links in 2-5 and K01 in 0, 1, 6; old links removed first', () => {
    const p = plan({ mode: 'sh', init: 'sysvinit', facts: facts({ rcDirs: true, cronD: true }) });
    expect(describePlan(p)).toEqual([
      `${P.shAgent} 0755`,
      `${P.initScript} 0755`,
      `${P.sysvinitDefaults} 0644`,
      `${P.cron} 0644`,
      `${P.sysctl} 0644`,
      ...['2', '3', '4', '5'].map((l) => `/etc/rc${l}.d/S20eve-diag-agent -> ../init.d/eve-diag-agent`),
      ...['0', '1', '6'].map((l) => `/etc/rc${l}.d/K01eve-diag-agent -> ../init.d/eve-diag-agent`),
    ]);
    expect(content(p.ops, P.initScript)).toBe(assets.sysvinit);
    expect(content(p.ops, P.sysvinitDefaults)).toMatch(/^EVE_DIAG_ARGS="--period 1"$/m);
    const glob = p.ops.findIndex((o) => o.op === 'remove-glob');
    const firstLink = p.ops.findIndex((o) => o.op === 'symlink');
    expect(glob).toBeGreaterThanOrEqual(0);
    expect(glob).toBeLessThan(firstLink);
    expect(p.warnings).toEqual([]);
  });

  it('warnings: no Node in the image, no runlevel directories, no cron', () => {
    expect(plan({ mode: 'node', init: 'systemd', facts: facts({ node: false }) }).warnings).toEqual([
      'the image has no /usr/bin/node: the agent starts once Node >= 18 is installed there (or bake with --sh)',
    ]);
    const s = plan({ mode: 'sh', init: 'sysvinit', facts: facts({ node: false }) });
    expect(s.warnings).toHaveLength(2);
    expect(s.warnings[0]).toMatch(/no \/etc\/rc2\.d/);
    expect(s.warnings[1]).toMatch(/no \/etc\/cron\.d or \/etc\/crontabs/);
    expect(describePlan(s)).toContain(`${P.cron} 0644`);
  });

  it('crontabs: our line replaces an old one and keeps the others; Node mode takes it out', () => {
    const old = `# root's jobs\n0 3 * * * /usr/bin/backup\n*/10 * * * * ${P.shAgent} mark\n`;
    expect(mergeCrontab(old, `* * * * * ${P.shAgent} mark`)).toBe(`# root's jobs\n0 3 * * * /usr/bin/backup\n* * * * * ${P.shAgent} mark\n`);
    expect(mergeCrontab(undefined, 'x')).toBe('x\n');
    expect(mergeCrontab(`*/10 * * * * ${P.shAgent} mark\n`, undefined)).toBeUndefined();
    const n = plan({ mode: 'node', init: 'openrc', facts: facts({ crontabs: true, crontabRoot: old }) });
    expect(content(n.ops, P.crontabRoot)).toBe("# root's jobs\n0 3 * * * /usr/bin/backup\n");
    const gone = plan({ mode: 'node', init: 'openrc', facts: facts({ crontabs: true, crontabRoot: `* * * * * ${P.shAgent} mark\n` }) });
    expect(kinds(gone.ops)).toContain(`remove ${P.crontabRoot}`);
    const untouched = plan({ mode: 'node', init: 'openrc', facts: facts({ crontabs: true, crontabRoot: '0 3 * * * /usr/bin/backup\n' }) });
    expect(describePlan(untouched).some((l) => l.startsWith(P.crontabRoot))).toBe(false);
  });

  it('refuses what cannot be: Node mode without a bundle, a mark period cron cannot express', () => {
    expect(() => plan({ mode: 'node', init: 'systemd', bundle: undefined })).toThrow(/bundle/);
    expect(() => plan({ mode: 'sh', init: 'systemd', markPeriodS: 90 })).toThrow(RangeError);
  });
});

describe('guestfish commands', () => {
  it('one command per step, uploads from local files, explicit modes', () => {
    const p = plan({ mode: 'sh', init: 'sysvinit', facts: facts({ rcDirs: true, cronD: true }) });
    const cmds = guestfishCommands(p.ops, (i) => `/tmp/w/op${i}`);
    expect(cmds[0]).toBe(`rm-f ${P.agent}`);
    expect(cmds).toContain('glob rm-f /etc/rc[0-6S].d/[SK][0-9][0-9]eve-diag-agent');
    expect(cmds).toContain('mkdir-p /etc/rc2.d');
    const i = p.ops.findIndex((o) => o.op === 'file' && o.path === P.initScript);
    expect(cmds).toContain(`upload /tmp/w/op${i} ${P.initScript}`);
    expect(cmds[cmds.indexOf(`upload /tmp/w/op${i} ${P.initScript}`) + 1]).toBe(`chmod 0755 ${P.initScript}`);
    expect(cmds).toContain(`chmod 0644 ${P.sysctl}`);
    expect(cmds[cmds.length - 1]).toBe('ln-sf ../init.d/eve-diag-agent /etc/rc6.d/K01eve-diag-agent');
    // Only these commands: nothing runs inside the guest.
    for (const c of cmds) expect(c.split(' ')[0]).toMatch(/^(rm-f|glob|mkdir-p|upload|chmod|ln-sf)$/);
  });

  it('gfQuote: plain words stay plain, others are double-quoted', () => {
    expect(gfQuote('/etc/rc2.d/S20eve-diag-agent')).toBe('/etc/rc2.d/S20eve-diag-agent');
    expect(gfQuote('/tmp/my dir/a"b\\c')).toBe('"/tmp/my dir/a\\"b\\\\c"');
  });

  it('parses qemu-img info', () => {
    expect(parseQemuImgInfo('{"virtual-size": 67108864, "filename": "a.img", "format": "qcow2"}')).toEqual({ format: 'qcow2', virtualSize: 67108864 });
    expect(() => parseQemuImgInfo('{}')).toThrow(/unexpected/);
  });

  it('libguestfsEnv: direct + force_tcg unless the caller says otherwise', () => {
    expect(libguestfsEnv({ PATH: '/bin' })).toEqual({ PATH: '/bin', LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' });
    expect(libguestfsEnv({ LIBGUESTFS_BACKEND_SETTINGS: '' }).LIBGUESTFS_BACKEND_SETTINGS).toBe('');
  });
});

/** A pretend guestfish over in-memory filesystems: enough for mountRoot and the probe. */
type Node = { dir: true } | { file: string } | { link: string };
function fakeGuestfs(fss: Record<string, { type: string; tree: Record<string, Node> }>): GuestfsRunner & { log: string[] } {
  let mounted: string | undefined;
  const log: string[] = [];
  const lookup = (path: string, follow: boolean): Node | undefined => {
    const tree = fss[mounted ?? '']?.tree;
    if (tree === undefined) throw new Error('guestfish: not mounted');
    let n = tree[path];
    for (let i = 0; follow && n !== undefined && 'link' in n && i < 8; i++) {
      const t: string = n.link;
      n = tree[t.startsWith('/') ? t : posix.normalize(posix.join(posix.dirname(path), t))];
    }
    return n;
  };
  const one = (cmd: string): string => {
    log.push(cmd);
    const [verb, arg, opt] = cmd.split(' ');
    const follow = opt === 'followsymlinks:true';
    switch (verb) {
      case 'list-devices':
        return [...new Set(Object.keys(fss).filter((d) => d.startsWith('/dev/sd')).map((d) => d.replace(/[0-9]+$/, '')))].join('\n');
      case 'list-partitions':
        return Object.keys(fss).filter((d) => /^\/dev\/sd[a-z][0-9]+$/.test(d)).join('\n');
      case 'lvs':
        return Object.keys(fss).filter((d) => !d.startsWith('/dev/sd')).join('\n');
      case '-vfs-type':
        return fss[arg as string]?.type ?? '';
      case '-mount-ro':
      case '-mount':
        if (fss[arg as string]?.type !== 'swap') mounted = arg;
        return '';
      case 'mounts':
        return mounted ?? '';
      case 'umount-all':
        mounted = undefined;
        return '';
      case 'is-dir': {
        const n = lookup(arg as string, follow);
        return String(n !== undefined && 'dir' in n);
      }
      case 'is-file': {
        const n = lookup(arg as string, follow);
        return String(n !== undefined && 'file' in n);
      }
      case 'is-symlink': {
        const n = lookup(arg as string, false);
        return String(n !== undefined && 'link' in n);
      }
      case 'readlink': {
        const n = lookup(arg as string, false);
        if (n === undefined || !('link' in n)) throw new Error('readlink: not a link');
        return n.link;
      }
      case 'cat': {
        const n = lookup(arg as string, true);
        if (n === undefined || !('file' in n)) throw new Error('cat: no file');
        return n.file; // guestfish prints the content and a newline, which the session strips
      }
      default:
        throw new Error(`fake guestfish: ${cmd}`);
    }
  };
  return { log, run: async (cmds) => cmds.map(one) };
}

const boot = { type: 'ext4', tree: { '/grub': { dir: true } } } as const;
const alpine = {
  type: 'ext4',
  tree: {
    '/etc': { dir: true },
    '/etc/init.d': { dir: true },
    '/etc/crontabs': { dir: true },
    '/etc/crontabs/root': { file: '0 3 * * * /usr/bin/backup\n' },
    '/bin/busybox': { file: 'ELF' },
    '/sbin/init': { link: '/bin/busybox' },
    '/sbin/openrc': { file: 'ELF' },
  },
} as const;
const debian = {
  type: 'ext4',
  tree: {
    '/etc': { dir: true },
    '/usr/lib/systemd/systemd': { file: 'ELF' },
    '/lib': { link: 'usr/lib' },
    '/sbin/init': { link: '/lib/systemd/systemd' },
    '/usr/bin/node': { file: 'ELF' },
  },
} as const;

describe('mountRoot with a pretend guestfish', () => {
  it('auto: skips swap and a boot partition, finds the root, probes it, mounts it read-write', async () => {
    const gf = fakeGuestfs({ '/dev/sda1': boot, '/dev/sda2': { type: 'swap', tree: {} }, '/dev/sda3': alpine });
    const r = await mountRoot(gf, 'auto', '/usr/bin/node');
    expect(r.device).toBe('/dev/sda3');
    expect(r.facts).toEqual({ ...base, sbinInit: 'symlink', sbinInitTarget: '/bin/busybox', openrc: true, initD: true, crontabs: true, crontabRoot: '0 3 * * * /usr/bin/backup\n', node: false });
    expect(detectInit(r.facts)?.init).toBe('openrc');
    expect(gf.log.filter((c) => /mount/.test(c) && c !== 'mounts')).toEqual(['-mount-ro /dev/sda1 /', 'umount-all', '-mount-ro /dev/sda3 /', 'umount-all', '-mount /dev/sda3 /']);
  });

  it('auto: a whole-disk filesystem; a root on LVM', async () => {
    expect((await mountRoot(fakeGuestfs({ '/dev/sda': alpine }), 'auto', '/n')).device).toBe('/dev/sda');
    const gf = fakeGuestfs({ '/dev/sda1': boot, '/dev/sda2': { type: 'LVM2_member', tree: {} }, '/dev/vg0/swap': { type: 'swap', tree: {} }, '/dev/vg0/root': debian });
    const r = await mountRoot(gf, 'auto', '/usr/bin/node');
    expect(r).toMatchObject({ device: '/dev/vg0/root', type: 'ext4' });
    expect(gf.log.slice(0, 6)).toEqual(['list-devices', 'list-partitions', '-vfs-type /dev/sda1', '-vfs-type /dev/sda2', 'lvs', '-vfs-type /dev/vg0/swap']);
  });

  it('merged /usr: systemd found through /lib -> usr/lib, /sbin/init read', async () => {
    const r = await mountRoot(fakeGuestfs({ '/dev/sda1': debian }), 1, '/usr/bin/node');
    expect(r.facts).toMatchObject({ sbinInit: 'symlink', sbinInitTarget: '/lib/systemd/systemd', systemd: true, node: true });
    expect(detectInit(r.facts)).toEqual({ init: 'systemd', why: '/sbin/init -> /lib/systemd/systemd' });
  });

  it('errors name --partition', async () => {
    const none = mountRoot(fakeGuestfs({ '/dev/sda1': boot }), 'auto', '/usr/bin/node');
    await expect(none).rejects.toThrow(BakeInputError);
    await expect(none).rejects.toThrow(/--partition: no root filesystem .*\/dev\/sda1 ext4.*pass --partition N/);
    await expect(mountRoot(fakeGuestfs({ '/dev/sda1': alpine, '/dev/sdb1': debian }), 'auto', '/n')).rejects.toThrow(/several root filesystems: \/dev\/sda1, \/dev\/sdb1/);
    await expect(mountRoot(fakeGuestfs({ '/dev/sda1': alpine }), 2, '/n')).rejects.toThrow(/--partition: the image has no filesystem on \/dev\/sda2/);
    await expect(mountRoot(fakeGuestfs({ '/dev/sda1': boot }), 1, '/n')).rejects.toThrow(/is not a root filesystem/);
    await expect(mountRoot(fakeGuestfs({ '/dev/sda1': { type: 'swap', tree: {} } }), 1, '/n')).rejects.toThrow(/cannot be mounted/);
  });
});

describe('eve-diag bake image: flags and errors', () => {
  const flags = (f: Partial<BakeImageFlags>): BakeImageFlags => ({ period: '1', markPeriod: '60', partition: 'auto', init: 'auto', node: '/usr/bin/node', ...f });

  it.each([
    [[], '--image'],
    [['--image', 'x.img', '--format', 'vmdk'], '--format'],
    [['--image', 'x.img', '--period', '0'], '--period'],
    [['--image', 'x.img', '--mark-period', 'often'], '--mark-period'],
    [['--image', 'x.img', '--sh', '--mark-period', '90'], '--mark-period'],
    [['--image', 'x.img', '--partition', '0'], '--partition'],
    [['--image', 'x.img', '--partition', 'root'], '--partition'],
    [['--image', 'x.img', '--init', 'upstart'], '--init'],
    [['--image', 'x.img', '--node', 'node'], '--node'],
    [['--image', 'x.img', '--sh', '--bundle', 'a.js'], '--bundle'],
  ])('%j: exit 2', async (args, flag) => {
    const r = await runCli('bake', 'image', ...args);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err.startsWith(`eve-diag: ${flag}: `)).toBe(true);
  });

  it('an image that does not exist, or is a directory: exit 2 naming --image', async () => {
    const missing = await runCli('bake', 'image', '--sh', '--image', join(dir, 'nope.img'));
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/^eve-diag: --image: the image does not exist \(got ".*nope\.img"\)$/);
    const d = await runCli('bake', 'image', '--sh', '--image', dir);
    expect(d.code).toBe(2);
    expect(d.err).toMatch(/^eve-diag: --image: is not a disk image file/);
  });

  /** Runs with PATH = a directory of fake tools (shell scripts), then the system's sh. */
  async function withTools(tools: Record<string, string>, fn: () => Promise<void>): Promise<void> {
    const bin = mkdtempSync(join(dir, 'bin-'));
    for (const [name, body] of Object.entries(tools)) {
      writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
      chmodSync(join(bin, name), 0o755);
    }
    const saved = process.env.PATH;
    process.env.PATH = bin;
    try {
      await fn();
    } finally {
      process.env.PATH = saved;
    }
  }

  it('libguestfs missing: exit 1 naming apt-get install libguestfs-tools', async () => {
    await withTools({}, async () => {
      const r = await runCli('bake', 'image', '--sh', '--image', join(dir, 'a.img'));
      expect(r.code).toBe(1);
      expect(r.err).toBe('eve-diag: guestfish and qemu-img not found on PATH: install libguestfs: apt-get install libguestfs-tools (it brings guestfish and qemu-img)');
    });
  });

  const qemuImg = (format: string) =>
    [
      'case $1 in',
      `info) for a; do last=$a; done; case $last in *locked*) echo 'qemu-img: Could not open: Failed to get shared "write" lock' >&2; exit 1;; esac; echo '{"format": "${format}", "virtual-size": 4096}';;`,
      'create) for a; do last=$a; done; : > "$last";;',
      `commit) echo commit >> ${join(dir, 'commits')};;`,
      'esac',
    ].join('\n');

  const qemuIo = `for a; do last=$a; done; case $last in *inuse*) printf '%s\\n' "qemu-io: can't open device $last: Failed to get \\"write\\" lock" "Is another process using the image [$last]?" >&2; exit 1;; esac`;

  it('an unknown format, an image in use: exit 2 naming --image', async () => {
    await withTools({ 'qemu-img': qemuImg('raw'), 'qemu-io': qemuIo, guestfish: 'exit 1' }, async () => {
      const r = await runCli('bake', 'image', '--sh', '--image', join(dir, 'inuse.img'));
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^eve-diag: --image: the image is in use \(a running QEMU holds its lock\): stop the VM first \(qemu-io: can't open device .*inuse\.img: Failed to get "write" lock Is another process/);
      expect((await runCli('bake', 'image', '--sh', '--image', join(dir, 'a.img'))).err).toMatch(/^eve-diag: guestfish failed/m); // after the progress lines (io.err)
    });
    await withTools({ 'qemu-img': qemuImg('vmdk'), guestfish: 'exit 1' }, async () => {
      const r = await runCli('bake', 'image', '--sh', '--image', join(dir, 'a.img'));
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^eve-diag: --image: unknown or unsupported image format "vmdk" \(raw or qcow2; pass --format/);
      const l = await runCli('bake', 'image', '--sh', '--image', join(dir, 'locked.img'));
      expect(l.code).toBe(2);
      expect(l.err).toMatch(/^eve-diag: --image: the image is in use \(a running QEMU holds its lock\): stop the VM first/);
    });
  });

  it('guestfish fails: exit 1 with its stderr tail, progress on stderr, nothing committed', async () => {
    const blurb = [
      '*stdin*:1: libguestfs: error: appliance closed the connection unexpectedly.',
      'This usually means the libguestfs appliance crashed.',
      'Do:',
      '  export LIBGUESTFS_DEBUG=1 LIBGUESTFS_TRACE=1',
      'and run the command again.  For further information, read:',
      '  http://libguestfs.org/guestfs-faq.1.html#debugging-libguestfs',
      "You can also run 'libguestfs-test-tool' and post the *complete* output",
      'into a bug report or message to the libguestfs mailing list.',
    ];
    const failing = ['while read -r line; do', '  case $line in', `    run) printf '%s\\n' ${blurb.map((l) => `'${l.replace(/'/g, "'\\''")}'`).join(' ')} >&2; exit 1;;`, '    echo\\ *) echo "${line#echo }";;', '  esac', 'done'].join('\n');
    await withTools({ 'qemu-img': qemuImg('raw'), guestfish: failing }, async () => {
      const out: string[] = [];
      const err: string[] = [];
      const p = bakeImageCommand(flags({ image: join(dir, 'a.img'), sh: true }), (s) => out.push(s), (s) => err.push(s));
      await expect(p).rejects.toThrow(
        /^guestfish failed \(exit 1\) at `run`:\nlibguestfs: error: appliance closed the connection unexpectedly\.\n\(LIBGUESTFS_DEBUG=1 shows the appliance's log\)\n\(.*a\.img is unchanged\)$/,
      );
      expect(out).toEqual([]);
      expect(err[0]).toMatch(/^eve-diag: bake image: .*a\.img: raw, 4096 bytes$/);
      expect(err[1]).toMatch(/^eve-diag: bake image: starting the libguestfs appliance /);
      expect(() => readFileSync(join(dir, 'commits'))).toThrow();
      const r = await runCli('bake', 'image', '--sh', '--image', join(dir, 'a.img'));
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^eve-diag: guestfish failed \(exit 1\) at `run`:\nlibguestfs: error: appliance closed/m);
      expect(r.err).toMatch(/^eve-diag: bake image: .*a\.img: raw, 4096 bytes$/m);
    });
  });

  it('a missing bundle is reported once the image passed its checks', async () => {
    await withTools({ 'qemu-img': qemuImg('raw'), guestfish: 'exit 1' }, async () => {
      const r = await runCli('bake', 'image', '--image', join(dir, 'a.img'), '--bundle', join(dir, 'nope.js'));
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^eve-diag: --bundle: cannot read the agent bundle .*nope\.js \(ENOENT\)/);
    });
  });

  it('the temporary overlay is removed afterwards', async () => {
    mkdirSync(join(dir, 'tmp'));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = join(dir, 'tmp');
    try {
      await withTools({ 'qemu-img': qemuImg('raw'), guestfish: 'exit 1' }, async () => {
        expect((await runCli('bake', 'image', '--sh', '--image', join(dir, 'a.img'))).code).toBe(1);
      });
    } finally {
      process.env.TMPDIR = saved;
    }
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
  });
});
