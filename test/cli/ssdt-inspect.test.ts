import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { compileAsl, withoutCreator } from '../helpers/iasl.js';
import { runCli } from '../helpers/cli.js';

let dir: string;
const { aml, layout } = buildDiagSsdt({ nonce: 0xfeedn });
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-inspect-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('eve-diag ssdt inspect', () => {
  test('prints header, checksum, region and ASL that iasl compiles back to the same table', async () => {
    const f = join(dir, 't.aml');
    await writeFile(f, aml);
    const r = await runCli('ssdt', 'inspect', f);
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    expect(r.out).toContain('checksum  valid');
    expect(r.out).toContain(`region    offset ${layout.region.offset}`);
    expect(r.out).toContain('nonce 000000000000feed');
    const asl = r.out.slice(r.out.indexOf('DefinitionBlock'));
    const back = await compileAsl(asl);
    expect(Buffer.from(withoutCreator(back.aml)).equals(Buffer.from(withoutCreator(aml)))).toBe(true);
  });

  test('a dump with live counters: values and ring shown; a bad checksum is reported', async () => {
    const t = aml.slice();
    const dv = new DataView(t.buffer);
    dv.setUint32(layout.fields.kernelBeats, 3, true);
    dv.setUint32(layout.fields.ring + 4 * 2, 10_000_000, true); // beat 2: 1000 ms
    dv.setUint32(layout.fields.ring + 4 * 3, 10_040_000, true); // beat 3: 1004 ms
    const f = join(dir, 'dump.aml');
    await writeFile(f, t);
    const r = await runCli('ssdt', 'inspect', '--no-asl', f);
    expect(r.out).toContain('kernel  beats 3');
    expect(r.out).toContain('ring    1004.0 1000.0 ms (newest first)');
    expect(r.out).toMatch(/checksum {2}INVALID/);
    expect(r.out).not.toContain('DefinitionBlock');
  });

  test('--json', async () => {
    const f = join(dir, 'j.aml');
    await writeFile(f, aml);
    const j = JSON.parse((await runCli('ssdt', 'inspect', '--json', f)).out);
    expect(j).toMatchObject({ checksum: { valid: true }, header: { oemTableId: 'EVEDIAG' }, region: { offset: layout.region.offset, nonce: '000000000000feed' } });
  });

  test('not a table / unreadable: exit 2 naming the file', async () => {
    const f = join(dir, 'small');
    await writeFile(f, 'hello');
    const r = await runCli('ssdt', 'inspect', f);
    expect(r.code).toBe(2);
    expect(r.err).toContain('not an ACPI table');
    const r2 = await runCli('ssdt', 'inspect', join(dir, 'missing.aml'));
    expect(r2.code).toBe(2);
    expect(r2.err).toContain('missing.aml');
    const trunc = join(dir, 'trunc.aml');
    await writeFile(trunc, (await readFile(join(dir, 't.aml'))).subarray(0, 100));
    expect((await runCli('ssdt', 'inspect', trunc)).code).toBe(2);
  });

  test('AML that does not decode: header still shown, exit 1', async () => {
    const t = aml.slice();
    t[36] = 0xfe; // not an opcode
    const f = join(dir, 'bad.aml');
    await writeFile(f, t);
    const r = await runCli('ssdt', 'inspect', f);
    expect(r.code).toBe(1);
    expect(r.out).toContain('AML       cannot decode');
    expect(r.out).toContain('table     SSDT');
  });
});
