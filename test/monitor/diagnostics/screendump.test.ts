import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { pngSize, ScreendumpCollector } from '../../../monitor/diagnostics/screendump.js';
import { writeBundle } from '../../../monitor/report/bundle.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

const temp = tempDirs('eve-diag-screendump-');

/** A PNG's first bytes: the signature, an IHDR of width x height (CRC not checked), some IDAT, IEND. */
function png(width: number, height: number, extra = 32): Buffer {
  const ihdr = Buffer.alloc(25);
  ihdr.writeUInt32BE(13, 0);
  ihdr.write('IHDR', 4, 'latin1');
  ihdr.writeUInt32BE(width, 8);
  ihdr.writeUInt32BE(height, 12);
  ihdr[16] = 8; // bit depth
  ihdr[17] = 2; // RGB
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), ihdr, Buffer.alloc(extra, 0x1b), Buffer.from('IEND', 'latin1')]);
}

let server: FakeQmpServer;
let image: Buffer;
beforeEach(async () => {
  server = await FakeQmpServer.start();
  image = png(720, 400);
  server.handle('screendump', (cmd) => {
    writeFileSync(String(cmd.arguments?.['filename']), image);
    return { return: {} };
  });
});
afterEach(async () => {
  await server.close();
});
const opts = (maxBytes = 64 * 1024) => ({ timeoutMs: 2000, signal: new AbortController().signal, maxBytes });

describe('ScreendumpCollector', () => {
  test('asks for a PNG, checks it, attaches it byte for byte as image/png, leaves no temporary file', async () => {
    const dir = temp();
    const r = await new ScreendumpCollector({ dir }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r).toMatchObject({ ok: true, summary: `screendump: 720x400 PNG, ${image.length} B` });
    const cmd = server.received.find((c) => c.execute === 'screendump');
    expect(cmd?.arguments).toMatchObject({ format: 'png' });
    expect(String(cmd?.arguments?.['filename']).startsWith(`${dir}/.tmp-screendump-`)).toBe(true);
    expect(existsSync(String(cmd?.arguments?.['filename']))).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
    expect(r.artifacts[0]).toMatchObject({ name: 'screen.png', mediaType: 'image/png' });
    expect(Buffer.from(r.artifacts[0]?.data as Uint8Array).equals(image)).toBe(true);

    // The bundle stores it as is (not sanitized like text: the 0x1b bytes stay).
    const b = await writeBundle(temp(), { app: 'vm', verdict: 'unknown', steps: [{ kind: 'screendump', ok: true, summary: r.summary, artifacts: r.artifacts }] });
    expect(b.manifest.steps[0]?.artifacts[0]).toMatchObject({ mediaType: 'image/png', bytes: image.length });
  });

  test('device and head are passed on', async () => {
    await new ScreendumpCollector({ dir: temp(), device: 'video0', head: 1 }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(server.received.find((c) => c.execute === 'screendump')?.arguments).toMatchObject({ device: 'video0', head: 1, format: 'png' });
  });

  test('no display: ok false with QEMU’s message', async () => {
    server.handle('screendump', { error: { class: 'GenericError', desc: 'There is no console to take a screendump from' } });
    const dir = temp();
    const r = await new ScreendumpCollector({ dir }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r).toMatchObject({ ok: false, artifacts: [] });
    expect(r.summary).toMatch(/^screendump: .*There is no console to take a screendump from/);
    expect(readdirSync(dir)).toEqual([]);
  });

  test('larger than the cap, or not a PNG: ok false', async () => {
    image = png(720, 400, 10_000);
    expect((await new ScreendumpCollector({ dir: temp() }).collect({ name: 'vm', qmp: server.path }, opts(4096))).summary).toMatch(/more than the step's 4\.0 KiB cap/);
    image = Buffer.from('P6\n720 400\n255\n');
    expect((await new ScreendumpCollector({ dir: temp() }).collect({ name: 'vm', qmp: server.path }, opts())).summary).toMatch(/not a usable PNG: .*too short|no PNG signature/);
    expect((await new ScreendumpCollector().collect({ name: 'vm' }, opts())).summary).toBe('screendump: the app has no QMP socket');
  });

  test('pngSize', () => {
    expect(pngSize(png(1024, 768))).toEqual({ width: 1024, height: 768 });
    expect(pngSize(png(0, 768))).toEqual({ problem: 'an implausible size 0x768' });
    expect(pngSize(png(100_000, 2))).toMatchObject({ problem: expect.stringMatching(/implausible/) });
    const bad = png(10, 10);
    bad.write('IDAT', 12, 'latin1');
    expect(pngSize(bad)).toEqual({ problem: 'the first chunk is not IHDR' });
    expect(() => new ScreendumpCollector({ dir: 'rel' })).toThrow(RangeError);
    expect(() => new ScreendumpCollector({ head: -1 })).toThrow(RangeError);
  });
});
