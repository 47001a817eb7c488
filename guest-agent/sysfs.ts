import { close as closeFd, open as openFd, read as readFd } from 'node:fs';
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { normalizeAcpiPath } from '../protocol/acpi-path.js';

/**
 * The agent's thermal zone in sysfs. Linux registers each ACPI thermal zone as
 * /sys/class/thermal/thermal_zoneN; `device/path` holds the zone's full ACPI path with every name
 * segment padded to four characters (`\_TZ_.EDGA`), and each read of `temp` evaluates the zone's
 * _TMP, which is what counts the agent heartbeat in our SSDT (DESIGN facts 1, 2). The zone number
 * depends on probe order, so the zone is found by its path, never by its number.
 */

export const THERMAL_CLASS_DIR = 'sys/class/thermal';
export type ZoneLookup =
  | { found: true; zone: string; dir: string; temp: string }
  | { found: false; reason: string };

/** The filesystem calls the lookup makes, so tests can fake failures the real tree cannot show. */
export interface SysfsFs {
  readdir(path: string): Promise<string[]>;
  readFile(path: string): Promise<string>;
}

export const realSysfs: SysfsFs = {
  readdir: (p) => readdir(p),
  readFile: (p) => readFile(p, 'utf8'),
};

/** At most this many thermal_zone entries are examined (a hostile or broken sysfs cannot make us loop). */
const MAX_ZONES = 1024;

/**
 * Finds the thermal zone whose `device/path` equals `acpiPath` (normalized) under `root`
 * (`/` in production, a fake tree in tests). Never throws: a missing class directory or an
 * unreadable entry becomes a reason.
 */
export async function findZone(root: string, acpiPath: string, fs: SysfsFs = realSysfs): Promise<ZoneLookup> {
  const want = normalizeAcpiPath(acpiPath);
  if (want === undefined) return { found: false, reason: `${JSON.stringify(acpiPath)} is not an ACPI path like \\_TZ_.EDGA` };
  const classDir = join(root, THERMAL_CLASS_DIR);
  let names: string[];
  try {
    names = await fs.readdir(classDir);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'error';
    return { found: false, reason: `cannot list ${classDir} (${code}): no thermal class (thermal.off=1? no ACPI thermal driver?)` };
  }
  const zones = names
    .filter((n) => /^thermal_zone\d{1,6}$/.test(n))
    .sort((a, b) => Number(a.slice(12)) - Number(b.slice(12)))
    .slice(0, MAX_ZONES);
  const seen: string[] = [];
  for (const name of zones) {
    const dir = join(classDir, name);
    let path: string;
    try {
      path = (await fs.readFile(join(dir, 'device', 'path'))).slice(0, 256).trim();
    } catch {
      continue; // not an ACPI zone (no device/path), or unreadable: not ours either way
    }
    if (normalizeAcpiPath(path) === want) return { found: true, zone: want, dir, temp: join(dir, 'temp') };
    if (seen.length < 8) seen.push(path);
  }
  const others = seen.length === 0 ? 'no ACPI thermal zones' : `zones seen: ${seen.join(', ')}`;
  return { found: false, reason: `no thermal zone ${want} under ${classDir} (${others}): is the eve-diag SSDT loaded?` };
}

/**
 * One read of a zone's `temp`: open, read at most 32 bytes, close. Each open+read of the attribute
 * runs _TMP once. Resolves with the text read (a temperature in m°C, e.g. `25000`).
 */
export async function readZoneTemp(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(32);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead).toString('latin1').trim();
  } finally {
    await fh.close();
  }
}

/**
 * Reads a zone's `temp` through one file descriptor kept open: each read is a single pread at offset
 * 0. A sysfs attribute is a seq_file, and a read at offset 0 resets it and calls the attribute's
 * show() again (fs/seq_file.c, seq_read_iter), so every read still runs _TMP once. One syscall and
 * one libuv pool round trip per beat instead of four: the agent's CPU share at a 1 s period is
 * mostly this (measured in bench/agent-footprint.ts). A failed read closes the fd; the next read
 * opens the path again.
 */
export class ZoneTempReader {
  #fd: number | undefined;
  #path: string | undefined;
  readonly #buf = Buffer.alloc(32);

  async read(path: string): Promise<string> {
    if (this.#fd !== undefined && this.#path !== path) this.close();
    if (this.#fd === undefined) {
      this.#fd = await new Promise<number>((resolve, reject) => openFd(path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
      this.#path = path;
    }
    const fd = this.#fd;
    try {
      const n = await new Promise<number>((resolve, reject) =>
        readFd(fd, this.#buf, 0, this.#buf.length, 0, (err, bytes) => (err ? reject(err) : resolve(bytes))),
      );
      return this.#buf.subarray(0, n).toString('latin1').trim();
    } catch (e) {
      if (this.#fd === fd) this.close();
      throw e;
    }
  }

  close(): void {
    if (this.#fd !== undefined) closeFd(this.#fd, () => undefined);
    this.#fd = undefined;
    this.#path = undefined;
  }
}
