import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The few numbers a mark and a PONG carry, as the kernel prints them: the first field of
 * /proc/uptime (seconds), the first field of /proc/loadavg (1-minute load) and MemAvailable from
 * /proc/meminfo (kB). Kept as the kernel's own text so the POSIX-sh agent, which cannot do
 * arithmetic on decimals, prints exactly the same thing. A value that is missing or not a plain
 * number is `?`.
 */
export interface ProcStats {
  uptime: string;
  load: string;
  /** MemAvailable with its unit, e.g. `123456kB`. */
  memAvail: string;
}

export const UNKNOWN = '?';

/** Keep a field only if it is a plain unsigned decimal (what the kernel prints), at most 24 chars. */
function plainNumber(field: string | undefined): string {
  return field !== undefined && /^[0-9]+(\.[0-9]+)?$/.test(field) && field.length <= 24 ? field : UNKNOWN;
}

/**
 * Fields as POSIX sh `read -r a b _` splits a line with the default IFS: leading blanks dropped, then
 * split on runs of spaces and tabs. Only the first line counts, like `read`.
 */
function fieldsOfLine(line: string): string[] {
  return line.replace(/^[ \t]+/, '').split(/[ \t]+/);
}

function firstField(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  return fieldsOfLine(text.split('\n')[0] as string)[0];
}

/** `12345.67 23456.78\n` -> `12345.67`. */
export function parseUptime(text: string | undefined): string {
  return plainNumber(firstField(text));
}

/** `0.05 0.10 0.12 1/123 4567\n` -> `0.05`. */
export function parseLoadavg(text: string | undefined): string {
  return plainNumber(firstField(text));
}

/** The `MemAvailable:  123456 kB` line -> `123456kB`. */
export function parseMemAvailable(text: string | undefined): string {
  if (text === undefined) return UNKNOWN;
  for (const line of text.split('\n')) {
    const [key, value] = fieldsOfLine(line);
    if (key === 'MemAvailable:') {
      const v = plainNumber(value);
      return v === UNKNOWN || v.includes('.') ? UNKNOWN : `${v}kB`;
    }
  }
  return UNKNOWN;
}

async function readSmall(path: string, max: number): Promise<string | undefined> {
  try {
    return (await readFile(path, 'latin1')).slice(0, max);
  } catch {
    return undefined;
  }
}

/** Reads the three files under `root` (`/` in production). Never throws. */
export async function readProcStats(root: string): Promise<ProcStats> {
  const [uptime, loadavg, meminfo] = await Promise.all([
    readSmall(join(root, 'proc/uptime'), 256),
    readSmall(join(root, 'proc/loadavg'), 256),
    readSmall(join(root, 'proc/meminfo'), 16_384),
  ]);
  return { uptime: parseUptime(uptime), load: parseLoadavg(loadavg), memAvail: parseMemAvailable(meminfo) };
}
