/**
 * QEMU builds for the real-guest tests: the host's own (`qemu-system-x86_64` on PATH, Debian's 7.2 on
 * bookworm) or a Debian QEMU from the archive, fetched with `apt-get download` and unpacked with
 * `dpkg-deb -x` beside it, never installed (DESIGN fact 14). bookworm-backports has 10.0: its
 * `qemu-system-x86` runs on bookworm's libraries, and wants the firmware and data of its own version
 * (`qemu-system-data`, SeaBIOS 1.16.3), which it is pointed at with `-L`; its modules come from the
 * unpacked tree (QEMU_MODULE_DIR), not the host's 7.2 ones. OVMF stays the host's.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../util/repo-root.js';
import { findOnPath } from '../util/which.js';
import { fetchIntoCache, runTool } from './debian-archive.js';
import { BACKPORTS_PIN_FILE, BACKPORTS_SOURCES_FILE, kernelCacheName, versionFromShow } from './kernels.js';

export interface QemuBuild {
  /** The `qemu-system-x86_64` to run. */
  binary: string;
  /** Put before the other arguments (`-L` data directories). */
  args: string[];
  /** Added to the environment (QEMU_MODULE_DIR). */
  env: Record<string, string>;
  /** `host qemu-system-x86_64` or `debian qemu-system-x86=1:10.0.2+ds-2+deb13u1~bpo12+1`. */
  source: string;
}

/** A Debian QEMU: `qemu-system-x86` and the packages of its version it needs, from apt's `release`. */
export interface DebianQemuSpec {
  release: string;
}

/** The QEMUs the matrix tests run, by name. `debian-7.2` is bookworm's (the host's), `debian-10.0` bookworm-backports'. */
export const GUEST_QEMUS = {
  'debian-7.2': undefined,
  'debian-10.0': { release: 'bookworm-backports' },
} as const satisfies Record<string, DebianQemuSpec | undefined>;
export type GuestQemuName = keyof typeof GUEST_QEMUS;

/** The version prefix `-version` must print for each name: a test asserts it. */
export const GUEST_QEMU_SERIES: Record<GuestQemuName, string> = { 'debian-7.2': '7.2', 'debian-10.0': '10.0' };

export class QemuFetchError extends Error {
  override readonly name = 'QemuFetchError';
}

const run = (cmd: string, args: readonly string[]): Promise<string> => runTool(cmd, args, (m, o) => new QemuFetchError(m, o));

/** The host's `qemu-system-x86_64`, as it is. */
export function hostQemu(): QemuBuild {
  const binary = findOnPath('qemu-system-x86_64');
  if (binary === undefined) throw new QemuFetchError('qemu-system-x86_64 is not installed: apt-get install qemu-system-x86');
  return { binary, args: [], env: {}, source: 'host qemu-system-x86_64' };
}

const PACKAGES = ['qemu-system-x86', 'qemu-system-data', 'seabios'] as const;
const inFlight = new Map<string, Promise<QemuBuild>>();

/** A named QEMU (GUEST_QEMUS), fetched into the cache when it is not the host's. */
export function guestQemu(name: GuestQemuName, cacheDir = join(repoRoot(), '.cache', 'qemu')): Promise<QemuBuild> {
  const spec = GUEST_QEMUS[name];
  if (spec === undefined) return Promise.resolve(hostQemu());
  const key = `${spec.release}/${cacheDir}`;
  let p = inFlight.get(key);
  if (p === undefined) {
    p = fetchDebianQemu(spec, cacheDir).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

function buildIn(dir: string, source: string): QemuBuild | undefined {
  const binary = join(dir, 'usr', 'bin', 'qemu-system-x86_64');
  if (!existsSync(binary)) return undefined;
  return {
    binary,
    // Its own data and SeaBIOS first; ipxe ROMs and OVMF from the host's default paths after them.
    args: ['-L', join(dir, 'usr', 'share', 'qemu'), '-L', join(dir, 'usr', 'share', 'seabios')],
    env: { QEMU_MODULE_DIR: join(dir, 'usr', 'lib', 'x86_64-linux-gnu', 'qemu') },
    source,
  };
}

async function fetchDebianQemu(spec: DebianQemuSpec, cacheDir: string): Promise<QemuBuild> {
  const t = ['-t', spec.release];
  const versions: string[] = [];
  for (const pkg of PACKAGES) {
    const show = await run('apt-cache', [...t, 'show', '--no-all-versions', pkg]).catch((err: unknown) => {
      throw new QemuFetchError(
        `QEMU from ${spec.release}: apt cannot resolve ${pkg} (apt must list ${spec.release}: ${BACKPORTS_SOURCES_FILE} and a Pin-Priority below 100 in ${BACKPORTS_PIN_FILE}; .ci/run does it): ${(err as Error).message}`,
        { cause: err },
      );
    });
    versions.push(versionFromShow(show, pkg));
  }
  // apt-cache show -t gives the candidate of that release only when it is the pinned-up one; a
  // version from the default release here means the suite is not listed.
  const [qemuVersion] = versions as [string];
  if (!qemuVersion.includes('bpo')) throw new QemuFetchError(`qemu-system-x86 from ${spec.release}: apt offers ${qemuVersion}, not a backport (is ${spec.release} listed?)`);
  const source = `debian qemu-system-x86=${qemuVersion}`;
  const dir = join(cacheDir, kernelCacheName('qemu-system-x86', qemuVersion));
  const cached = buildIn(dir, source);
  if (cached !== undefined) return cached;

  process.stderr.write(`eve-diag: fetching QEMU ${qemuVersion} (${PACKAGES.join(', ')} from ${spec.release}) into ${dir}\n`);
  await fetchIntoCache({ cacheDir, dir, packages: PACKAGES.map((p, i) => `${p}=${versions[i] as string}`), makeError: (m, o) => new QemuFetchError(m, o) });
  const fetched = buildIn(dir, source);
  if (fetched === undefined) throw new QemuFetchError(`${source}: the package has no usr/bin/qemu-system-x86_64`);
  return fetched;
}

/** `QEMU emulator version 10.0.2 (Debian ...)`: the version. */
export async function qemuVersion(q: QemuBuild): Promise<string> {
  const out = await new Promise<string>((resolve, reject) =>
    execFile(q.binary, ['-version'], { env: { ...process.env, ...q.env } }, (err, stdout) => (err === null ? resolve(stdout) : reject(new QemuFetchError(`${q.binary} -version failed`, { cause: err })))),
  );
  const m = /QEMU emulator version (\S+)/.exec(out);
  if (m === null) throw new QemuFetchError(`${q.binary} -version: no version in ${JSON.stringify(out.slice(0, 200))}`);
  return m[1] as string;
}
