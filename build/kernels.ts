/**
 * Guest kernels for the test/demo VM: the host's own (what `linux-image-amd64` installed in /boot and
 * /lib/modules) or any Debian kernel package from the archive, fetched with `apt-get download` and
 * unpacked with `dpkg-deb -x` into a cache directory keyed by package and version. Nothing is ever
 * installed over the host's kernel (DESIGN fact 14).
 *
 * A kernel is named by its metapackage and apt target release (`linux-image-amd64` from
 * `bookworm-backports` is 6.12 today): apt resolves the metapackage to the image package
 * (`linux-image-6.12.95+deb12-amd64`) and its candidate version. An image package dpkg has installed at
 * that version is used from /boot and /lib/modules directly, with no download.
 */
import { existsSync, statSync } from 'node:fs';
import { access, constants, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../util/repo-root.js';
import { findOnPath } from '../util/which.js';
import { fetchIntoCache, runTool } from './debian-archive.js';

export interface GuestKernel {
  /** `uname -r` of the kernel: `6.12.95+deb12-amd64`. */
  release: string;
  /** The bzImage to pass to QEMU's `-kernel`. */
  vmlinuz: string;
  /** Its modules: `.../lib/modules/<release>` (modules.dep inside). */
  modulesDir: string;
  /**
   * Its System.map, when the package ships a real one. Debian's /boot/System.map-* is an 83-byte
   * placeholder (the real one is in linux-image-*-dbg): not given.
   */
  systemMap?: string;
  /** Where it came from: `host /boot` or `debian linux-image-6.12.95+deb12-amd64=6.12.95-1~bpo12+1`. */
  source: string;
}

/** A Debian kernel: a metapackage resolved by apt with `-t release` (none: apt's default candidate). */
export interface DebianKernelSpec {
  metapackage: string;
  release?: string;
}

/**
 * The kernels the real-guest tests boot, by name. `debian-6.1` is bookworm's own kernel (on a bookworm
 * host the one `linux-image-amd64` installed); `debian-6.12` comes from bookworm-backports, which
 * apt must list (with a low pin: `.ci/run` adds it).
 */
export const GUEST_KERNELS = {
  'debian-6.1': { metapackage: 'linux-image-amd64' },
  'debian-6.12': { metapackage: 'linux-image-amd64', release: 'bookworm-backports' },
  // Debian's cloud kernel (bookworm's 6.1, fewer drivers): ACPI thermal is still built in.
  'debian-cloud': { metapackage: 'linux-image-cloud-amd64' },
} as const satisfies Record<string, DebianKernelSpec>;
export type GuestKernelName = keyof typeof GUEST_KERNELS;

/** The version prefix each named kernel must have: a test asserts it, so a renamed suite cannot pass silently. */
export const GUEST_KERNEL_SERIES: Record<GuestKernelName, string> = { 'debian-6.1': '6.1.', 'debian-6.12': '6.12.', 'debian-cloud': '6.1.' };

/** What `.ci/run` writes so apt lists bookworm-backports without ever upgrading from it by itself. */
export const BACKPORTS_SOURCES_FILE = '/etc/apt/sources.list.d/eve-diag-bookworm-backports.sources';
export const BACKPORTS_PIN_FILE = '/etc/apt/preferences.d/eve-diag-bookworm-backports';

export class KernelFetchError extends Error {
  override readonly name = 'KernelFetchError';
}

const run = (cmd: string, args: readonly string[]): Promise<string> => runTool(cmd, args, (m, o) => new KernelFetchError(m, o));

/** `Depends: linux-image-6.12.95+deb12-amd64` in `apt-cache depends` output: the image package. */
export function imagePackageFromDepends(text: string, metapackage: string): string {
  const m = /^\s*Depends: (linux-image-[^\s<>]+)\s*$/m.exec(text);
  if (m === null) throw new KernelFetchError(`apt-cache depends ${metapackage}: no linux-image-* dependency in:\n${text.trim()}`);
  return m[1] as string;
}

/** The `Version:` field of `apt-cache show --no-all-versions` output. */
export function versionFromShow(text: string, pkg: string): string {
  const m = /^Version: (\S+)$/m.exec(text);
  if (m === null) throw new KernelFetchError(`apt-cache show ${pkg}: no Version field`);
  return m[1] as string;
}

/** Cache directory name for one package version (`~` and `+` kept, `:` of an epoch replaced). */
export function kernelCacheName(pkg: string, version: string): string {
  return `${pkg}_${version}`.replace(/[^A-Za-z0-9.+~_-]/g, '_');
}

const inFlight = new Map<string, Promise<GuestKernel>>();

/** Resolves, and fetches into the cache if needed, the Debian kernel `spec`. */
export function debianKernel(spec: DebianKernelSpec, cacheDir = join(repoRoot(), '.cache', 'kernels')): Promise<GuestKernel> {
  const key = `${spec.metapackage}/${spec.release ?? ''}/${cacheDir}`;
  let p = inFlight.get(key);
  if (p === undefined) {
    p = fetchDebianKernel(spec, cacheDir).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

/** A named test kernel (GUEST_KERNELS). */
export function guestKernel(name: GuestKernelName): Promise<GuestKernel> {
  return debianKernel(GUEST_KERNELS[name]);
}

async function fetchDebianKernel(spec: DebianKernelSpec, cacheDir: string): Promise<GuestKernel> {
  const t = spec.release === undefined ? [] : ['-t', spec.release];
  const what = `${spec.metapackage}${spec.release === undefined ? '' : ` from ${spec.release}`}`;
  const depends = await run('apt-cache', [...t, 'depends', '--no-recommends', '--no-suggests', spec.metapackage]).catch((err: unknown) => {
    const hint =
      spec.release === 'bookworm-backports'
        ? ` (apt must list bookworm-backports: as root, write ${BACKPORTS_SOURCES_FILE} with "Types: deb / URIs: http://deb.debian.org/debian / ` +
          `Suites: bookworm-backports / Components: main" and a Pin-Priority below 100 in ${BACKPORTS_PIN_FILE}, then apt-get update; .ci/run does it)`
        : ' (apt-get update as root?)';
    throw new KernelFetchError(`guest kernel ${what}: apt cannot resolve it${hint}: ${(err as Error).message}`, { cause: err });
  });
  const pkg = imagePackageFromDepends(depends, spec.metapackage);
  const version = versionFromShow(await run('apt-cache', [...t, 'show', '--no-all-versions', pkg]), pkg);
  const release = pkg.replace(/^linux-image-/, '').replace(/-unsigned$/, '');
  const source = `debian ${pkg}=${version}`;

  // Installed at this very version: its files are in /boot and /lib/modules already.
  const installed = await run('dpkg-query', ['-W', '-f', '${db:Status-Abbrev} ${Version}', pkg]).catch(() => '');
  if (installed.startsWith('ii ') && installed.trim().endsWith(` ${version}`)) {
    const host = await hostKernelFiles('/boot', '/lib/modules', release);
    if (host !== undefined) return { ...host, source: `host /boot (${source})` };
  }

  const dir = join(cacheDir, kernelCacheName(pkg, version));
  const cached = await hostKernelFiles(join(dir, 'boot'), join(dir, 'lib', 'modules'), release);
  if (cached !== undefined) {
    await ensureModulesDep(dir, release);
    return { ...cached, source };
  }

  process.stderr.write(`eve-diag: fetching guest kernel ${pkg}=${version} (${what}) into ${dir}\n`);
  await fetchIntoCache({
    cacheDir,
    dir,
    packages: [`${pkg}=${version}`],
    aptArgs: t,
    makeError: (m, o) => new KernelFetchError(m, o),
    prepare: (root) => ensureModulesDep(root, release),
  });
  const fetched = await hostKernelFiles(join(dir, 'boot'), join(dir, 'lib', 'modules'), release);
  if (fetched === undefined) throw new KernelFetchError(`${pkg}=${version}: the package has no boot/vmlinuz-${release}`);
  return { ...fetched, source };
}

/**
 * modules.dep is made by depmod when a kernel package is installed, not shipped in it: the guest
 * image's module loader (kernelModuleFiles) needs it, so it is made here for an extracted package.
 */
async function ensureModulesDep(root: string, release: string): Promise<void> {
  if (existsSync(join(root, 'lib', 'modules', release, 'modules.dep'))) return;
  const depmod = findOnPath('depmod') ?? ['/usr/sbin/depmod', '/sbin/depmod'].find((p) => existsSync(p));
  if (depmod === undefined) throw new KernelFetchError('depmod (kmod) is not installed: apt-get install kmod');
  await run(depmod, ['-b', root, release]);
}

async function hostKernelFiles(bootDir: string, modulesRoot: string, release: string): Promise<Omit<GuestKernel, 'source'> | undefined> {
  const vmlinuz = join(bootDir, `vmlinuz-${release}`);
  if (!existsSync(vmlinuz)) return undefined;
  const systemMap = join(bootDir, `System.map-${release}`);
  return {
    release,
    vmlinuz,
    modulesDir: join(modulesRoot, release),
    ...(existsSync(systemMap) && statSync(systemMap).size > 4096 ? { systemMap } : {}),
  };
}

/** The newest `vmlinuz-*` in `bootDir`, by version order, with its modules under `modulesRoot`. */
export async function hostKernel(bootDir = '/boot', modulesRoot = '/lib/modules'): Promise<GuestKernel> {
  const names = (await readdir(bootDir).catch(() => [] as string[])).filter((n) => n.startsWith('vmlinuz-'));
  names.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const newest = names.at(-1);
  if (newest === undefined) {
    throw new KernelFetchError(`no kernel ${bootDir}/vmlinuz-* to boot the test guest: apt-get install linux-image-amd64`);
  }
  const release = newest.slice('vmlinuz-'.length);
  const files = (await hostKernelFiles(bootDir, modulesRoot, release)) as Omit<GuestKernel, 'source'>;
  // Some distributions install the kernel 0600 root.
  await access(files.vmlinuz, constants.R_OK).catch((cause: unknown) => {
    throw new KernelFetchError(`kernel ${files.vmlinuz} is not readable by this user`, { cause });
  });
  return { ...files, source: `host ${bootDir}` };
}

/**
 * The version string a bzImage carries (Linux boot protocol 2.00+: the setup header's `kernel_version`
 * field at 0x20E is an offset, minus 0x200, of a NUL-terminated string), e.g.
 * `6.12.95+deb12-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.12.95-1~bpo12+1 (...)`.
 * Reads only the first 64 KiB; every offset is checked.
 */
export async function bzImageVersion(vmlinuz: string): Promise<string> {
  const fh = await open(vmlinuz, 'r');
  try {
    const buf = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return bzImageVersionOf(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

export function bzImageVersionOf(head: Buffer): string {
  // "HdrS" at 0x202, boot protocol version at 0x206 (Documentation/arch/x86/boot.rst).
  if (head.length < 0x210 || head.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new KernelFetchError('not a bzImage: no HdrS setup header');
  if (head.readUInt16LE(0x206) < 0x200) throw new KernelFetchError('bzImage boot protocol too old for kernel_version');
  const at = head.readUInt16LE(0x20e) + 0x200;
  if (at >= head.length) throw new KernelFetchError(`bzImage kernel_version offset 0x${at.toString(16)} is outside the header`);
  const end = head.indexOf(0, at);
  if (end < 0 || end - at > 512) throw new KernelFetchError('bzImage kernel_version is not a NUL-terminated string');
  return head.toString('latin1', at, end);
}
