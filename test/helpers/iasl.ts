import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The real ACPICA compiler, used as the test oracle (never at runtime). Missing iasl is a hard
 * failure with the package to install, never a skip.
 */
export async function iaslVersion(): Promise<string> {
  try {
    const { stdout } = await run('iasl', ['-v']);
    const m = /version (\d+)/.exec(stdout);
    return m?.[1] ?? stdout.trim();
  } catch (e) {
    throw new Error('iasl not found: install it with `apt-get install -y acpica-tools`', { cause: e });
  }
}

export interface IaslResult {
  aml: Uint8Array;
  output: string;
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-iasl-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Compile ASL with iasl. Warnings are errors here (`-we`); optimizations stay at iasl's defaults. */
export function compileAsl(asl: string, extraFlags: string[] = []): Promise<IaslResult> {
  return withDir(async (dir) => {
    const src = join(dir, 't.asl');
    await writeFile(src, asl);
    try {
      const { stdout, stderr } = await run('iasl', ['-we', ...extraFlags, '-p', join(dir, 'out'), src]);
      return { aml: new Uint8Array(await readFile(join(dir, 'out.aml'))), output: stdout + stderr };
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string };
      throw new Error(`iasl failed to compile:\n${err.stdout ?? ''}${err.stderr ?? ''}\n--- ASL ---\n${asl}`, { cause: e });
    }
  });
}

/** Disassemble AML with `iasl -d`; returns the ASL and iasl's own output (errors and warnings counts). */
export function disassemble(aml: Uint8Array): Promise<{ asl: string; output: string }> {
  return withDir(async (dir) => {
    const f = join(dir, 't.aml');
    await writeFile(f, aml);
    const { stdout, stderr } = await run('iasl', ['-d', f]);
    return { asl: await readFile(join(dir, 't.dsl'), 'utf8'), output: stdout + stderr };
  });
}

/** Table bytes with the creator fields (28..35) and the checksum (9) zeroed, for comparing with iasl's output. */
export function withoutCreator(table: Uint8Array): Uint8Array {
  const t = table.slice();
  t[9] = 0;
  t.fill(0, 28, 36);
  return t;
}
