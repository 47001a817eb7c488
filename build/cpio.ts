/**
 * Encoder for the cpio "newc" format (magic 070701), the format the Linux kernel unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst). Pure: no I/O, no clock.
 *
 * Output is deterministic: mtime, uid, gid and device numbers are 0, inode numbers are 1, 2, 3... in entry
 * order. Every entry is a 110-byte ASCII header, the NUL-terminated name padded to a 4-byte boundary, then
 * the data padded to a 4-byte boundary; the archive ends with the entry `TRAILER!!!`.
 */

export type CpioEntry =
  | { kind: 'dir'; name: string; mode?: number }
  | { kind: 'file'; name: string; data: Buffer; mode?: number }
  | { kind: 'symlink'; name: string; target: string }
  | { kind: 'char'; name: string; major: number; minor: number; mode?: number };

export const CPIO_NEWC_MAGIC = '070701';
export const CPIO_TRAILER = 'TRAILER!!!';
const HEADER_SIZE = 110;

// File type bits of st_mode (inode(7)).
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** Encodes entries, in order, into one newc archive ending with the trailer. */
export function encodeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    checkName(e.name);
    parts.push(...encodeEntry(e, ino++));
  }
  parts.push(...record({ ino: 0, mode: 0, nlink: 1, rdevMajor: 0, rdevMinor: 0 }, CPIO_TRAILER, Buffer.alloc(0)));
  return Buffer.concat(parts);
}

/** Throws when `name` is not a relative path without `..` components that the archive can carry. */
export function checkName(name: string): void {
  if (name === '') throw new Error('cpio: empty entry name');
  if (name.startsWith('/')) throw new Error(`cpio: absolute entry name ${JSON.stringify(name)}`);
  if (name.includes('\0')) throw new Error(`cpio: NUL byte in entry name ${JSON.stringify(name)}`);
  if (name.split('/').includes('..')) throw new Error(`cpio: '..' in entry name ${JSON.stringify(name)}`);
  if (name === CPIO_TRAILER) throw new Error(`cpio: reserved entry name ${JSON.stringify(name)}`);
}

function encodeEntry(e: CpioEntry, ino: number): Buffer[] {
  switch (e.kind) {
    case 'dir':
      return record({ ino, mode: S_IFDIR | perm(e.mode ?? 0o755, e.name), nlink: 2, rdevMajor: 0, rdevMinor: 0 }, e.name, Buffer.alloc(0));
    case 'file':
      return record({ ino, mode: S_IFREG | perm(e.mode ?? 0o644, e.name), nlink: 1, rdevMajor: 0, rdevMinor: 0 }, e.name, e.data);
    case 'symlink':
      // A symlink's data is its target, without a NUL.
      if (e.target === '' || e.target.includes('\0')) {
        throw new Error(`cpio: bad symlink target ${JSON.stringify(e.target)} for ${JSON.stringify(e.name)}`);
      }
      return record({ ino, mode: S_IFLNK | 0o777, nlink: 1, rdevMajor: 0, rdevMinor: 0 }, e.name, Buffer.from(e.target));
    case 'char':
      return record(
        { ino, mode: S_IFCHR | perm(e.mode ?? 0o600, e.name), nlink: 1, rdevMajor: u32(e.major, 'major'), rdevMinor: u32(e.minor, 'minor') },
        e.name,
        Buffer.alloc(0),
      );
  }
}

interface Fields {
  ino: number;
  mode: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
}

function record(f: Fields, name: string, data: Buffer): Buffer[] {
  const nameBytes = Buffer.from(name + '\0');
  const hex = (v: number) => v.toString(16).toUpperCase().padStart(8, '0');
  const header =
    CPIO_NEWC_MAGIC +
    [
      f.ino,
      f.mode,
      0, // uid
      0, // gid
      f.nlink,
      0, // mtime
      u32(data.length, 'file size'),
      0, // devmajor (of the filesystem holding the entry)
      0, // devminor
      f.rdevMajor,
      f.rdevMinor,
      nameBytes.length, // namesize, including the NUL
      0, // check (only used by the 070702 "crc" variant)
    ]
      .map(hex)
      .join('');
  return [Buffer.from(header, 'latin1'), nameBytes, pad(HEADER_SIZE + nameBytes.length), data, pad(data.length)];
}

/** Zero bytes that bring `len` to a multiple of 4. */
function pad(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function perm(mode: number, name: string): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new Error(`cpio: bad permission bits 0o${mode.toString(8)} for ${JSON.stringify(name)}`);
  }
  return mode;
}

function u32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new Error(`cpio: ${what} ${v} does not fit in 32 bits`);
  return v;
}
