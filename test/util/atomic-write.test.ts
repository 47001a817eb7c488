import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureDir, writeFileAtomically, writeFilesAtomically } from '../../util/atomic-write.js';

const dir = mkdtempSync(join(tmpdir(), 'eve-diag-atomic-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('writeFilesAtomically', () => {
  it('writes every file with its mode, replacing what was there', async () => {
    writeFileSync(join(dir, 'a'), 'old');
    await writeFilesAtomically([
      { path: join(dir, 'a'), data: 'new a' },
      { path: join(dir, 'b'), data: new Uint8Array([1, 2]), mode: 0o600 },
    ]);
    expect(readFileSync(join(dir, 'a'), 'utf8')).toBe('new a');
    expect([...readFileSync(join(dir, 'b'))]).toEqual([1, 2]);
    expect(statSync(join(dir, 'b')).mode & 0o777).toBe(0o600);
    await writeFileAtomically(join(dir, 'c'), 'c', 0o755);
    expect(statSync(join(dir, 'c')).mode & 0o100).toBe(0o100);
  });

  it('on a failure leaves the old files and no temporary behind', async () => {
    const sub = join(dir, 'fail');
    await ensureDir(sub);
    writeFileSync(join(sub, 'x'), 'old x');
    await expect(
      writeFilesAtomically([
        { path: join(sub, 'x'), data: 'new x' },
        { path: join(sub, 'missing-dir', 'y'), data: 'y' },
      ]),
    ).rejects.toThrow(/ENOENT/);
    expect(readFileSync(join(sub, 'x'), 'utf8')).toBe('old x');
    expect(readdirSync(sub)).toEqual(['x']);
  });
});

describe('ensureDir', () => {
  it('creates missing ancestors once and refuses a file in the way', async () => {
    await ensureDir(join(dir, 'p', 'q', 'r'));
    expect(statSync(join(dir, 'p', 'q', 'r')).isDirectory()).toBe(true);
    await expect(ensureDir(join(dir, 'a', 'z'))).rejects.toThrow(/ENOTDIR|not a directory/);
  });
});
