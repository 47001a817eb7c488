import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeCpio, type CpioEntry } from '../../build/cpio.js';

// Names of 1..4 characters and data of 0, 1, 5 bytes walk through every padding case.
const entries: CpioEntry[] = [
  { kind: 'dir', name: 'd' },
  { kind: 'dir', name: 'd/sub', mode: 0o700 },
  { kind: 'file', name: 'd/ab', data: Buffer.from('hello'), mode: 0o755 },
  { kind: 'file', name: 'abc', data: Buffer.from('x') },
  { kind: 'file', name: 'abcd', data: Buffer.alloc(0) },
  { kind: 'symlink', name: 'd/link', target: 'ab' },
  { kind: 'char', name: 'console', major: 5, minor: 1 },
];

describe('encodeCpio', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('writes the golden newc header, name, data and trailer for one file', () => {
    const out = encodeCpio([{ kind: 'file', name: 'a', data: Buffer.from('hi') }]);
    const header =
      '070701' + // magic
      '00000001' + // ino
      '000081A4' + // mode: S_IFREG | 0644
      '00000000' + // uid
      '00000000' + // gid
      '00000001' + // nlink
      '00000000' + // mtime
      '00000002' + // filesize
      '00000000' + // devmajor
      '00000000' + // devminor
      '00000000' + // rdevmajor
      '00000000' + // rdevminor
      '00000002' + // namesize ("a\0")
      '00000000'; // check
    const trailer = '070701' + '00000000'.repeat(4) + '00000001' + '00000000'.repeat(6) + '0000000B' + '00000000';
    const expected = Buffer.concat([
      Buffer.from(header + 'a\0', 'latin1'), // 112 bytes: already aligned
      Buffer.from('hi\0\0'), // data padded to 4
      Buffer.from(trailer + 'TRAILER!!!\0', 'latin1'), // 121 bytes
      Buffer.alloc(3), // padded to 124
    ]);
    expect(out.toString('latin1')).toBe(expected.toString('latin1'));
    expect(out.length % 4).toBe(0);
  });

  it('lists every entry with its type, mode and device numbers (cpio -tv)', () => {
    // cpio prints mtime in local time: pin the zone and locale so the dates read "Jan  1  1970".
    const env = { ...process.env, TZ: 'UTC', LC_ALL: 'C' };
    const listing = execFileSync('cpio', ['-t', '-v', '--quiet'], { input: encodeCpio(entries), env }).toString();
    const lines = listing.trim().split('\n');
    expect(lines).toHaveLength(entries.length);
    expect(lines[0]).toMatch(/^drwxr-xr-x .* d$/);
    expect(lines[1]).toMatch(/^drwx------ .* d\/sub$/);
    expect(lines[2]).toMatch(/^-rwxr-xr-x .* 5 Jan {2}1 {2}1970 d\/ab$/);
    expect(lines[3]).toMatch(/^-rw-r--r-- .* 1 Jan {2}1 {2}1970 abc$/);
    expect(lines[5]).toMatch(/^lrwxrwxrwx .* d\/link -> ab$/);
    expect(lines[6]).toMatch(/^crw------- +1 root +root +5, +1 .* console$/);
  });

  it('extracts to the same tree (cpio -i)', () => {
    dir = mkdtempSync(join(tmpdir(), 'cpio-test-'));
    // Without the device node: creating one needs root.
    const archive = encodeCpio(entries.filter((e) => e.kind !== 'char'));
    execFileSync('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames'], { input: archive, cwd: dir });
    expect(readFileSync(join(dir, 'd/ab'), 'utf8')).toBe('hello');
    expect(statSync(join(dir, 'd/ab')).mode & 0o7777).toBe(0o755);
    expect(readFileSync(join(dir, 'abc'), 'utf8')).toBe('x');
    expect(statSync(join(dir, 'abcd')).size).toBe(0);
    expect(statSync(join(dir, 'd/sub')).isDirectory()).toBe(true);
    expect(readlinkSync(join(dir, 'd/link'))).toBe('ab');
  });

  it('is deterministic', () => {
    expect(encodeCpio(entries).equals(encodeCpio(entries))).toBe(true);
  });

  it.each([
    ['', /empty entry name/],
    ['/bin/sh', /absolute entry name "\/bin\/sh"/],
    ['..', /'\.\.' in entry name "\.\."/],
    ['a/../b', /'\.\.' in entry name "a\/\.\.\/b"/],
    ['a\0b', /NUL byte in entry name "a\\u0000b"/],
    ['TRAILER!!!', /reserved entry name "TRAILER!!!"/],
  ])('rejects the name %j', (name, message) => {
    expect(() => encodeCpio([{ kind: 'dir', name }])).toThrow(message);
  });

  it('accepts names that only look like ".."', () => {
    expect(() => encodeCpio([{ kind: 'dir', name: '..a' }, { kind: 'dir', name: 'a..' }])).not.toThrow();
  });

  it('rejects bad modes, device numbers and symlink targets, naming the value', () => {
    expect(() => encodeCpio([{ kind: 'file', name: 'f', data: Buffer.alloc(0), mode: 0o10000 }])).toThrow(/0o10000 for "f"/);
    expect(() => encodeCpio([{ kind: 'char', name: 'c', major: -1, minor: 0 }])).toThrow(/major -1/);
    expect(() => encodeCpio([{ kind: 'symlink', name: 'l', target: '' }])).toThrow(/symlink target "" for "l"/);
  });
});
