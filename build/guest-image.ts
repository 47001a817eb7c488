/**
 * The test/demo guest: the host's Debian kernel plus a tiny busybox initramfs whose /init can run a few
 * failure scenarios (panic, stopped userspace, an agent reading a thermal zone) and then serves a shell
 * on ttyS0 for a host-side driver (test/helpers/guest.ts). Options add the guest agent, a Node binary
 * with its shared libraries (a ~100 MB image, cached under its own key), kernel modules /init loads
 * (a second disk needs virtio_blk: Debian builds it as a module), or any file.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { encodeCpio, type CpioEntry } from './cpio.js';
import { hostKernel, type GuestKernel } from './kernels.js';
import { writeFileAtomically } from '../util/atomic-write.js';
import { repoRoot } from '../util/repo-root.js';

/** Bump when the image layout or compression changes in a way the cpio bytes alone would not show. */
export const GUEST_IMAGE_BUILDER_VERSION = 1;

/** The line /init prints on the console once the guest is up (before the scenario and the shell). */
export const GUEST_READY_LINE = 'EVE-DIAG-GUEST-READY';

/** Busybox applets linked into /bin: what /init needs plus a useful set for tests typing commands. */
export const GUEST_APPLETS: readonly string[] = [
  'sh', 'ash', 'mount', 'umount', 'mkdir', 'cat', 'echo', 'sleep', 'stty', 'dmesg', 'ls', 'grep', 'sysctl',
  'uname', 'poweroff', 'reboot', 'halt', 'setsid', 'cttyhack', 'kill', 'killall', 'ps', 'pidof', 'top',
  'free', 'uptime', 'date', 'sync', 'true', 'false', 'test', '[', 'printf', 'head', 'tail', 'wc', 'sed',
  'awk', 'cut', 'tr', 'sort', 'uniq', 'find', 'xargs', 'env', 'id', 'seq', 'timeout', 'hexdump', 'od',
  'xxd', 'dd', 'readlink', 'realpath', 'basename', 'dirname', 'cp', 'mv', 'rm', 'rmdir', 'ln', 'touch',
  'chmod', 'mknod', 'stat', 'logger', 'nproc', 'tee', 'devmem', 'insmod', 'lsmod', 'modprobe', 'vi', 'less',
];

/** Where `agent` puts the guest agent in the image (absolute paths in the guest). */
export const GUEST_AGENT_PATH = '/usr/lib/eve-diag/eve-diag-agent.js';
export const GUEST_SH_AGENT_PATH = '/usr/lib/eve-diag/eve-diag-agent.sh';

/** A file added to the image: `path` relative to the root (`usr/lib/x/y.js`); parents are created. */
export interface GuestFile {
  path: string;
  data: Buffer;
  mode?: number;
}

export interface GuestImageOptions {
  /** Static busybox to embed; default `/bin/busybox` (Debian `busybox-static`). */
  busyboxPath?: string;
  /**
   * Also embed a Node binary and every shared library `ldd` lists for it, at their host paths (so
   * the binary and its dynamic loader find them as on the host). About 100 MB: the image is cached
   * apart from the small default one (its own key) and needs a guest with ~1 GiB of RAM.
   * `true` means the Node running this code (`process.execPath`).
   */
  node?: boolean | { binary: string };
  /**
   * The guest agent: the Node bundle (build/agent-bundle.ts) at GUEST_AGENT_PATH and/or the POSIX-sh
   * agent at GUEST_SH_AGENT_PATH. The bundle needs `node` too.
   */
  agent?: { bundle?: Buffer | string; sh?: Buffer | string };
  /** Extra files (a crontab, /etc/passwd...). */
  files?: readonly GuestFile[];
  /**
   * Kernel modules /init loads (insmod) before the ready line, by name as in modules.dep
   * (`virtio_blk`, `virtio_pci`); their dependencies are added, in load order. Default none (the
   * default image: /init unchanged). Compressed modules are unpacked (`.ko.gz`; `.ko.xz` and
   * `.ko.zst` with the xz / zstd command); a built-in one is skipped.
   */
  modules?: readonly string[];
  /** The kernel to boot and take modules from (build/kernels.ts); default the newest in `bootDir`. */
  kernel?: GuestKernel;
  /** Where to look for `vmlinuz-*` when no `kernel` is given; default `/boot` (modules in /lib/modules). */
  bootDir?: string;
  /** Where the kernel's modules are; default the kernel's own `modulesDir`. */
  modulesDir?: string;
  /** Cache root; default `<repo>/.cache/guest`. */
  cacheDir?: string;
}

export interface GuestImage {
  /** The bzImage to boot (`-kernel`). */
  kernel: string;
  /** Its `uname -r`. */
  release: string;
  initrd: string;
  key: string;
}

/**
 * Builds (or reuses from the cache) the gzip-compressed initramfs for `opts.kernel` (default: the newest
 * host kernel). Throws with the Debian package to install when busybox-static or a kernel is missing.
 */
export async function buildGuestImage(opts: GuestImageOptions = {}): Promise<GuestImage> {
  const kernel = opts.kernel ?? (await hostKernel(opts.bootDir ?? '/boot'));
  const busybox = await readStaticBusybox(opts.busyboxPath ?? '/bin/busybox');
  const extra: GuestFile[] = [];
  if (opts.node !== undefined && opts.node !== false) {
    extra.push(...(await nodeFiles(opts.node === true ? process.execPath : opts.node.binary)));
  }
  if (opts.agent?.bundle !== undefined) extra.push({ path: GUEST_AGENT_PATH, data: Buffer.from(opts.agent.bundle), mode: 0o755 });
  if (opts.agent?.sh !== undefined) extra.push({ path: GUEST_SH_AGENT_PATH, data: Buffer.from(opts.agent.sh), mode: 0o755 });
  extra.push(...(opts.files ?? []));
  let modulePaths: string[] = [];
  if (opts.modules !== undefined && opts.modules.length > 0) {
    const mods = await kernelModuleFiles(opts.modulesDir ?? kernel.modulesDir, kernel.release, opts.modules);
    extra.push(...mods);
    modulePaths = mods.map((m) => `/${m.path}`);
  }
  const cpio = encodeCpio(guestCpioEntries(busybox, initScript(modulePaths), extra));
  const key = guestImageKey(cpio);
  const dir = join(opts.cacheDir ?? join(repoRoot(), '.cache', 'guest'), key);
  const initrd = join(dir, 'initrd.img');
  if (!existsSync(initrd)) {
    await mkdir(dir, { recursive: true });
    // A concurrent builder or a crash never leaves a half-written image in place.
    await writeFileAtomically(initrd, gzipSync(cpio, { level: 9 }));
  }
  return { kernel: kernel.vmlinuz, release: kernel.release, initrd, key };
}

/** Cache key: sha256 over the builder version and the uncompressed archive (busybox, /init, links...). */
export function guestImageKey(cpio: Buffer): string {
  return createHash('sha256').update(`eve-diag-guest-image/${GUEST_IMAGE_BUILDER_VERSION}\0`).update(cpio).digest('hex');
}

/** Directories of the base image (guestCpioEntries creates them first). */
const BASE_DIRS = ['bin', 'dev', 'proc', 'sys', 'root', 'tmp'];

/**
 * The initramfs contents, in archive order (parents before children). `extra` files come last, each
 * after the directories it needs; without them the archive is the default image, byte for byte.
 */
export function guestCpioEntries(busybox: Buffer, init: string, extra: readonly GuestFile[] = []): CpioEntry[] {
  const dirs = new Set(BASE_DIRS);
  const added = new Set<string>();
  const extraEntries: CpioEntry[] = [];
  for (const f of extra) {
    const path = f.path.replace(/^\/+/, '');
    if (added.has(path) || path === 'init' || path === 'bin/busybox' || path === 'dev/console' || dirs.has(path)) {
      throw new Error(`guest image: ${path} is already in the image`);
    }
    if (path.startsWith('bin/') && GUEST_APPLETS.includes(path.slice(4))) throw new Error(`guest image: ${path} is a busybox applet link`);
    added.add(path);
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!dirs.has(dir)) {
        dirs.add(dir);
        extraEntries.push({ kind: 'dir', name: dir });
      }
    }
    extraEntries.push({ kind: 'file', name: path, data: f.data, mode: f.mode ?? 0o644 });
  }
  return [
    ...['bin', 'dev', 'proc', 'sys', 'root'].map((name): CpioEntry => ({ kind: 'dir', name })),
    { kind: 'dir', name: 'tmp', mode: 0o1777 },
    // The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
    { kind: 'char', name: 'dev/console', major: 5, minor: 1 },
    { kind: 'file', name: 'bin/busybox', data: busybox, mode: 0o755 },
    ...GUEST_APPLETS.map((a): CpioEntry => ({ kind: 'symlink', name: `bin/${a}`, target: 'busybox' })),
    { kind: 'file', name: 'init', data: Buffer.from(init), mode: 0o755 },
    ...extraEntries,
  ];
}

/**
 * The shared libraries in `ldd` output, as absolute paths: `libc.so.6 => /lib/.../libc.so.6 (0x..)`
 * and the loader line `/lib64/ld-linux-x86-64.so.2 (0x..)`. The vDSO (no file) is left out; a
 * library ldd could not find (`not found`) makes it throw (the binary would not start).
 */
export function parseLddOutput(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (/=>\s*not found/.test(line)) throw new Error(`ldd: ${line}`);
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line);
    if (m !== null && !out.includes(m[1] as string)) out.push(m[1] as string);
  }
  return out;
}

/** The Node binary at /usr/bin/node... (its host path) plus its libraries at their host paths. */
async function nodeFiles(binary: string): Promise<GuestFile[]> {
  const real = await realpath(binary).catch((cause: unknown) => {
    throw new Error(`cannot find the Node binary ${binary}`, { cause });
  });
  const ldd = await new Promise<string>((resolve, reject) =>
    execFile('ldd', [real], (err, stdout) => (err ? reject(new Error(`ldd ${real} failed: ${err.message}`, { cause: err })) : resolve(stdout))),
  );
  const files: GuestFile[] = [{ path: real, data: await readFile(real), mode: 0o755 }];
  for (const lib of parseLddOutput(ldd)) files.push({ path: lib, data: await readFile(lib), mode: 0o755 });
  return files;
}

/**
 * The POSIX-sh /init. Kernel command line parameters (read from /proc/cmdline):
 * - `eve_diag.scenario=panic|stop-userspace|read-agent-zone`
 * - `eve_diag.delay=N` seconds before panic/stop-userspace (default 0)
 * - `eve_diag.zone_path=P`, `eve_diag.period=N` (default 1) for read-agent-zone
 * `modules` (paths in the image, in load order) are loaded with insmod first; none: the default /init.
 * It must never exit: init exiting panics the kernel.
 */
export function initScript(modules: readonly string[] = []): string {
  const insmod =
    modules.length === 0
      ? ''
      : `# Kernel modules of this image (build/guest-image.ts, option modules), in load order.
for m in ${modules.join(' ')}; do
  insmod "$m" || echo "eve-diag: insmod $m failed"
done
`;
  return `#!/bin/sh
# eve-diag test guest /init (generated by build/guest-image.ts)
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Debian's default kernel.sysrq=438 refuses the dump keys (DESIGN fact 8).
echo 1 > /proc/sys/kernel/sysrq
${insmod}
scenario= delay=0 zone_path= period=1
set -f # no globbing of command line words
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    eve_diag.scenario=*) scenario=\${arg#*=} ;;
    eve_diag.delay=*) delay=\${arg#*=} ;;
    eve_diag.zone_path=*) zone_path=\${arg#*=} ;;
    eve_diag.period=*) period=\${arg#*=} ;;
  esac
done
set +f

echo ${GUEST_READY_LINE}

case "$scenario" in
  '') ;;
  panic) (sleep "$delay"; echo c > /proc/sysrq-trigger) & ;;
  # kill(-1) reaches every process but init and the caller.
  stop-userspace) (sleep "$delay"; kill -STOP -1) & ;;
  read-agent-zone)
    [ -r "$zone_path" ] || echo "eve-diag: zone file '$zone_path' is not readable"
    (while :; do cat "$zone_path" > /dev/null 2>&1; sleep "$period"; done) & ;;
  *) echo "eve-diag: unknown scenario '$scenario'" ;;
esac

# A shell for the host driver: no echo (so output holds only what commands print), no prompt, ttyS0 as
# its controlling terminal (setsid -c) so job control and ^C work. Restarted whenever it exits.
while :; do
  setsid -c sh -c 'stty -echo; PS1= PS2= exec sh -i' <> /dev/ttyS0 >&0 2>&0
  sleep 1
done
`;
}

/**
 * The files of kernel modules `names` and of everything they depend on (modules.dep in `dir`), in
 * load order (dependencies first), at `lib/modules/<version>/<path in dir>` without a compression
 * suffix. Built-in modules (modules.builtin) are skipped; an unknown name throws.
 */
export async function kernelModuleFiles(dir: string, version: string, names: readonly string[]): Promise<GuestFile[]> {
  const depText = await readFile(join(dir, 'modules.dep'), 'utf8').catch((cause: unknown) => {
    throw new Error(`cannot read ${dir}/modules.dep (kernel modules for the test guest: apt-get install linux-image-${version})`, { cause });
  });
  const builtin = await readFile(join(dir, 'modules.builtin'), 'utf8').catch(() => '');
  const deps = new Map<string, string[]>();
  for (const line of depText.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) deps.set(line.slice(0, colon), line.slice(colon + 1).trim().split(/\s+/).filter((d) => d !== ''));
  }
  const modName = (path: string) => basename(path).replace(/\.ko(\.(gz|xz|zst))?$/, '').replace(/-/g, '_');
  const byName = new Map([...deps.keys()].map((p) => [modName(p), p]));
  const builtins = new Set(builtin.split('\n').filter((l) => l !== '').map(modName));
  const order: string[] = [];
  const visit = (path: string, chain: string[]) => {
    if (order.includes(path)) return;
    if (chain.includes(path)) throw new Error(`modules.dep: a dependency cycle through ${path}`);
    for (const d of deps.get(path) ?? []) visit(d, [...chain, path]);
    order.push(path);
  };
  for (const name of names) {
    const n = name.replace(/-/g, '_');
    const path = byName.get(n);
    if (path !== undefined) visit(path, []);
    else if (!builtins.has(n)) throw new Error(`kernel module ${name}: not in ${dir}/modules.dep nor built in`);
  }
  const files: GuestFile[] = [];
  for (const rel of order) {
    const file = join(dir, rel);
    let data: Buffer = await readFile(file);
    if (rel.endsWith('.gz')) data = gunzipSync(data);
    else if (rel.endsWith('.xz')) data = await decompressWith('xz', file);
    else if (rel.endsWith('.zst')) data = await decompressWith('zstd', file);
    files.push({ path: `lib/modules/${version}/${rel.replace(/\.(gz|xz|zst)$/, '')}`, data });
  }
  return files;
}

function decompressWith(tool: 'xz' | 'zstd', file: string): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    execFile(tool, ['-dc', file], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (err, stdout) =>
      err ? reject(new Error(`${tool} -dc ${file} failed (busybox insmod needs plain .ko; apt-get install ${tool === 'xz' ? 'xz-utils' : 'zstd'}): ${err.message}`, { cause: err })) : resolve(stdout),
    ),
  );
}

async function readStaticBusybox(path: string): Promise<Buffer> {
  const hint = 'the test guest needs a static busybox: apt-get install busybox-static';
  const data = await readFile(path).catch((cause: unknown) => {
    throw new Error(`cannot read ${path}; ${hint}`, { cause });
  });
  if (hasElfInterpreter(data)) throw new Error(`${path} is dynamically linked (has PT_INTERP); ${hint}`);
  return data;
}

/**
 * Whether an ELF image asks for a program interpreter (PT_INTERP: dynamically linked). Throws when `elf`
 * is not a well-formed ELF file; every offset is bounds-checked.
 */
export function hasElfInterpreter(elf: Buffer): boolean {
  const bad = (why: string) => new Error(`not an ELF executable: ${why}`);
  if (elf.length < 52 || elf.readUInt32BE(0) !== 0x7f454c46) throw bad('no \\x7fELF magic');
  const is64 = elf[4] === 2; // EI_CLASS: 1 ELFCLASS32, 2 ELFCLASS64
  const le = elf[5] === 1; // EI_DATA: 1 little-endian, 2 big-endian
  if ((!is64 && elf[4] !== 1) || (!le && elf[5] !== 2)) throw bad('bad EI_CLASS or EI_DATA');
  const u16 = (o: number) => (le ? elf.readUInt16LE(o) : elf.readUInt16BE(o));
  const u32 = (o: number) => (le ? elf.readUInt32LE(o) : elf.readUInt32BE(o));
  if (is64 && elf.length < 64) throw bad('truncated header');
  // e_phoff, e_phentsize, e_phnum (ELF spec, "ELF Header").
  const phoff = is64 ? Number(le ? elf.readBigUInt64LE(32) : elf.readBigUInt64BE(32)) : u32(28);
  const phentsize = u16(is64 ? 54 : 42);
  const phnum = u16(is64 ? 56 : 44);
  if (phentsize < 4 || phoff + phnum * phentsize > elf.length) throw bad('program headers out of bounds');
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) if (u32(phoff + i * phentsize) === PT_INTERP) return true;
  return false;
}

