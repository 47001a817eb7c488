import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { hashFile, readManifest, readSpoolFile, SpoolFileTooLarge, writeSpoolFile } from '../../../monitor/report/bundle.js';
import { DROPPED_LEDGER, DROPPED_SENT, Spool } from '../../../monitor/report/spool.js';
import { MANIFEST_FILE, type ReportManifest } from '../../../protocol/report-manifest.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

/**
 * The spool on a node (issue 13 §4): directories 0700, files 0600, and nothing placed in it by
 * someone else is followed: a symlink in place of a bookkeeping file, a manifest or an artifact, or
 * a FIFO that would block a reader. The shipper's side of it is in test/monitor/shipper.controller.test.ts.
 */

const temp = tempDirs('eve-diag-spool-sec-');

const report = (app: string, text = 'console text\n') => ({
  app,
  verdict: 'guest-kernel-hung' as const,
  steps: [{ kind: 'console-capture', ok: true, summary: 's', artifacts: [{ name: 'console.txt', mediaType: 'text/plain' as const, data: text }] }],
});

const mode = (p: string) => statSync(p).mode & 0o777;
const artifactOf = (dir: string) => (JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as ReportManifest).steps[0]!.artifacts[0]!.file;

/** A file outside the spool, which nothing in the spool may read or write. */
function outsider(): string {
  const p = join(temp(), 'outside.txt');
  writeFileSync(p, 'outside\n');
  chmodSync(p, 0o644);
  return p;
}

describe('spool modes', () => {
  test('the spool and each bundle are 0700, every file in them 0600; a spool made 0755 by an operator is narrowed', async () => {
    const dir = join(temp(), 'spool');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const s = new Spool({ dir });
    const b = await s.write(report('vm1'));
    await s.markDelivered(b.id, { stored: true });
    await s.recordDropped({ id: 'x', bytes: 1, droppedAt: new Date().toISOString(), reason: 'test' });
    expect(mode(dir)).toBe(0o700);
    expect(mode(b.dir)).toBe(0o700);
    const files = readdirSync(b.dir);
    expect(files).toContain('.delivered');
    for (const f of files) expect(mode(join(b.dir, f)), f).toBe(0o600);
    expect(mode(join(dir, DROPPED_LEDGER))).toBe(0o600);
  });

  test('under a umask of 0: still 0700 and 0600 (modes are set, not left to the umask)', async () => {
    const dir = join(temp(), 'spool');
    const script = `
      process.umask(0);
      const { Spool } = await import(${JSON.stringify(new URL('../../../dist/monitor/report/spool.js', import.meta.url).href)});
      const s = new Spool({ dir: ${JSON.stringify(dir)} });
      const b = await s.write({ app: 'vm1', verdict: 'guest-kernel-hung', steps: [{ kind: 'k', ok: true, summary: 's', artifacts: [{ name: 'a.txt', mediaType: 'text/plain', data: 'x' }] }] });
      console.log(b.dir);`;
    const bdir = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }).trim();
    expect(mode(dir)).toBe(0o700);
    expect(mode(bdir)).toBe(0o700);
    for (const f of readdirSync(bdir)) expect(mode(join(bdir, f)), f).toBe(0o600);
  });
});

describe('links and FIFOs placed in the spool are never followed', () => {
  test('a symlink in place of the dropped ledger: removed, its target untouched, the ledger a real file again', async () => {
    const dir = temp();
    const s = new Spool({ dir });
    const target = outsider();
    symlinkSync(target, join(dir, DROPPED_LEDGER));
    symlinkSync(target, join(dir, DROPPED_SENT));
    const refused: string[] = [];
    const s2 = new Spool({ dir, events: { refused: (e) => refused.push(e.path) } });
    await s2.recordDropped({ id: 'r1', bytes: 1, droppedAt: new Date().toISOString(), reason: 'test' });
    expect(readFileSync(target, 'utf8')).toBe('outside\n');
    expect(mode(target)).toBe(0o644);
    expect(lstatSync(join(dir, DROPPED_LEDGER)).isFile()).toBe(true);
    expect(lstatSync(join(dir, DROPPED_SENT), { throwIfNoEntry: false })).toBeUndefined();
    expect(refused.sort()).toEqual([join(dir, DROPPED_LEDGER), join(dir, DROPPED_SENT)].sort());
    expect((await s.dropped()).map((d) => d.id)).toEqual(['r1']);
  });

  test('a symlink in place of an artifact of an undelivered bundle: the bundle is rejected (never sent), the link removed, its target untouched', async () => {
    const dir = temp();
    const s = new Spool({ dir });
    const keep = await s.write(report('vm1'));
    const bad = await s.write(report('vm2'));
    const target = outsider();
    const f = join(bad.dir, artifactOf(bad.dir));
    unlinkSync(f);
    symlinkSync(target, f);
    const e = await s.entries();
    expect(e.map((x) => [x.id, x.rejected])).toEqual([
      [keep.id, false],
      [bad.id, true],
    ]);
    expect(JSON.parse(readFileSync(join(bad.dir, '.rejected'), 'utf8')).reason).toMatch(/damaged: .* is a symlink/);
    expect(lstatSync(f, { throwIfNoEntry: false })).toBeUndefined();
    expect(readFileSync(target, 'utf8')).toBe('outside\n');
  });

  test('readManifest: a symlinked manifest is not a manifest; an artifact linked outside fails verification', async () => {
    const dir = temp();
    const s = new Spool({ dir });
    const b = await s.write(report('vm1'));
    const target = outsider();
    const f = join(b.dir, artifactOf(b.dir));
    unlinkSync(f);
    symlinkSync(target, f);
    await expect(readManifest(b.dir)).rejects.toThrow(/missing \(or not a regular file\)/);
    const m = join(b.dir, MANIFEST_FILE);
    unlinkSync(m);
    symlinkSync(target, m);
    await expect(readManifest(b.dir)).rejects.toThrow(/not a regular file/);
  });

  test('a FIFO in place of a file: readSpoolFile and hashFile return at once (no open that blocks), nothing read', async () => {
    const dir = temp();
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const t0 = Date.now();
    expect(await readSpoolFile(fifo, 1024)).toBeUndefined();
    await expect(hashFile(fifo)).rejects.toThrow(/not a regular file/);
    const link = join(dir, 'link');
    symlinkSync(outsider(), link);
    expect(await readSpoolFile(link, 1024)).toBeUndefined();
    await expect(hashFile(link)).rejects.toThrow(/ELOOP|symbolic link/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  test('readSpoolFile reads no more than its bound: a larger file is a SpoolFileTooLarge naming both sizes', async () => {
    const p = join(temp(), 'big');
    writeFileSync(p, Buffer.alloc(4097));
    const e = await readSpoolFile(p, 4096).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SpoolFileTooLarge);
    expect((e as SpoolFileTooLarge).message).toMatch(/4097 bytes, more than the 4096/);
  });

  test('writeSpoolFile over a symlink replaces the link, never writes its target; 0600; no temporary left', async () => {
    const dir = temp();
    const target = outsider();
    const p = join(dir, 'note');
    symlinkSync(target, p);
    await writeSpoolFile(p, 'ours\n');
    expect(readFileSync(target, 'utf8')).toBe('outside\n');
    expect(lstatSync(p).isFile()).toBe(true);
    expect(readFileSync(p, 'utf8')).toBe('ours\n');
    expect(mode(p)).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['note']);
  });
});
