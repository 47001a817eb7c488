import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { decodeTable } from '../../acpi/decode/decode.js';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { AcpiError } from '../../acpi/errors.js';
import { sanitizeLine, sanitizeText } from '../../host-reader/console/sanitize.js';
import { parseGreeting, parseMessage } from '../../host-reader/qmp/messages.js';
import { LineStream } from '../../host-reader/qmp/line-stream.js';
import { QmpProtocolError } from '../../host-reader/qmp/errors.js';
import { assessHeartbeat, type AssessState } from '../../host-reader/region/assess.js';
import { decodeRegion, findRegion } from '../../host-reader/region/decode.js';
import { decodeDiskRecord, DISK_SECTOR, encodeDiskRecord, scanDiskRing } from '../../protocol/heartbeat-disk.js';
import { parseMark } from '../../protocol/mark.js';
import { RUNS, params, timed } from './budget.js';

/**
 * Every decoder of bytes a guest (or QEMU on its behalf) controls, fuzzed (issue 13 §1): for random
 * input and for mutations of valid input, the decoder returns a value or throws its own typed error,
 * quickly, and what it returns is bounded by what it was given. Seeded and with a fixed budget here;
 * FUZZ_RUNS=N raises the budget (bench/fuzz runs it longer).
 */


/** Random bytes, and mutations of `valid`: bytes overwritten, a cut, a stretch repeated. */
function bytesNear(valid: Uint8Array, maxExtra = 4096): fc.Arbitrary<Uint8Array> {
  const mutated = fc
    .record({
      writes: fc.array(fc.tuple(fc.nat({ max: valid.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 16 }),
      cut: fc.option(fc.nat({ max: valid.length }), { nil: undefined }),
      tail: fc.uint8Array({ maxLength: 64 }),
    })
    .map(({ writes, cut, tail }) => {
      const b = valid.slice();
      for (const [at, v] of writes) b[at] = v;
      const head = cut === undefined ? b : b.subarray(0, cut);
      return Uint8Array.from([...head, ...tail]);
    });
  return fc.oneof(fc.uint8Array({ maxLength: maxExtra }), mutated);
}

const { aml, layout } = buildDiagSsdt({ nonce: 0x1234_5678_9abc_def0n, kernelPeriodMs: 1000 });
const region = aml.slice(layout.region.offset);

describe('the diagnostic region and its assessment', () => {
  test('decodeRegion: a region or a failure naming a field, never a throw', () => {
    fc.assert(
      fc.property(bytesNear(region), fc.boolean(), (bytes, withNonce) => {
        const r = timed(() => decodeRegion(bytes, withNonce ? { nonce: layout.nonce, ringLength: layout.ring.length } : {}));
        if (r.ok) {
          expect(r.region.ring.length).toBeLessThanOrEqual(256);
          expect(r.region.regionSize).toBeLessThanOrEqual(bytes.length);
        } else {
          expect(typeof r.field).toBe('string');
          expect(r.reason.length).toBeLessThan(400);
        }
      }),
      params,
    );
  });

  test('findRegion over a whole table: a region, an error, or null', () => {
    fc.assert(
      fc.property(bytesNear(aml, 8192), (bytes) => {
        const r = timed(() => findRegion(bytes));
        expect(r === null || 'error' in r || r.offset < bytes.length).toBe(true);
      }),
      params,
    );
  });

  test('assessHeartbeat over any sequence of decodable regions: a report, never a throw', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(bytesNear(region), fc.nat({ max: 5000 }), fc.boolean()), { maxLength: 20 }), (steps) => {
        let state: AssessState | undefined;
        let now = 0;
        for (const [bytes, gap, running] of steps) {
          now += gap;
          const d = decodeRegion(bytes);
          const a = timed(() => assessHeartbeat({ previous: state, sample: d.ok ? d.region : undefined, sampleError: d.ok ? undefined : d.reason, now, vm: { running } }));
          expect(typeof a.report.kernel.status).toBe('string');
          expect(a.report.kernel.detail.length).toBeLessThan(1000);
          state = a.state;
        }
      }),
      params,
    );
  });
});

describe('AML', () => {
  test('decodeTable: a table or an AcpiError (AmlDecodeError with the offset), never another throw', () => {
    fc.assert(
      fc.property(bytesNear(aml, 2048), (bytes) => {
        try {
          timed(() => decodeTable(bytes));
        } catch (e) {
          if (!(e instanceof AcpiError)) throw e;
        }
      }),
      params,
    );
  });

  test('nesting deeper than maxDepth is an AmlDecodeError, not a stack overflow', () => {
    // Package ops nested 100 000 deep: 0x12 PkgLength=2 NumElements=1, over and over.
    const n = 100_000;
    const body = new Uint8Array(36 + 3 * n);
    body.set(aml.subarray(0, 36));
    for (let i = 0; i < n; i++) body.set([0x12, 0x02, 0x01], 36 + 3 * i);
    new DataView(body.buffer).setUint32(4, body.length, true);
    expect(() => decodeTable(body)).toThrow(AcpiError);
  });
});

describe('console text and mark lines', () => {
  const hostileText = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 2000 }),
    fc.array(fc.constantFrom('\x1b[', '\x1b]', '\x9b', '\r', '\n', '\x07', '\x1b\\', '\u202e', 'a', '9', ';', '\ud800', '\x00'), { maxLength: 3000 }).map((a) => a.join('')),
  );

  test('sanitizeText: bounded, no control characters but TAB and LF, idempotent', () => {
    fc.assert(
      fc.property(fc.oneof(hostileText, fc.uint8Array({ maxLength: 4000 })), fc.integer({ min: 0, max: 3000 }), fc.constantFrom('head', 'tail') as fc.Arbitrary<'head' | 'tail'>, (input, maxBytes, keep) => {
        const r = timed(() => sanitizeText(input, { maxBytes, keep }));
        expect(Buffer.byteLength(r.text, 'utf8')).toBeLessThanOrEqual(maxBytes);
        // eslint-disable-next-line no-control-regex -- the control characters are what must not be there
        expect(/[\x00-\x08\x0b-\x1f\x7f-\u009f\u202a-\u202e\u2066-\u2069]/.test(r.text)).toBe(false);
        expect(sanitizeText(r.text, { maxBytes, keep }).text).toBe(r.text);
        const line = sanitizeLine(typeof input === 'string' ? input : Buffer.from(input).toString('utf8'), 200);
        expect(line.length).toBeLessThanOrEqual(200);
        expect(line.includes('\n')).toBe(false);
      }),
      params,
    );
  });

  test('parseMark: a mark with at most 64 fields or undefined, even for a line of a million spaces', () => {
    fc.assert(
      fc.property(hostileText, fc.boolean(), (text, prefixed) => {
        const m = timed(() => parseMark(prefixed ? `eve-diag mark ${text}` : text));
        if (m !== undefined) {
          expect(Number.isSafeInteger(m.seq)).toBe(true);
          expect(Object.keys(m.fields).length).toBeLessThanOrEqual(64);
        }
      }),
      params,
    );
    expect(timed(() => parseMark(`eve-diag mark seq=1 ${'a=b '.repeat(1_000_000)}`))).toBeUndefined();
  });
});

describe('heartbeat-disk records', () => {
  const valid = encodeDiskRecord({ seq: 7n, uptimeMs: 12_345n, wallMs: 1_700_000_000_000n, instance: 42n, periodMs: 1000, slots: 8 });

  test('decodeDiskRecord: a record or a reason; scanDiskRing over any image: bounded', () => {
    fc.assert(
      fc.property(bytesNear(valid, 1024), fc.integer({ min: 1, max: 64 }), (bytes, slots) => {
        const r = timed(() => decodeDiskRecord(bytes));
        expect(r.ok || typeof r.reason === 'string').toBe(true);
        const image = new Uint8Array(DISK_SECTOR * slots);
        image.set(bytes.subarray(0, image.length));
        timed(() => scanDiskRing(image, slots));
      }),
      params,
    );
  });
});

describe('QMP lines', () => {
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);

  test('parseMessage and parseGreeting: a message or a QmpProtocolError, for any line', () => {
    const json = fc.oneof(
      fc.json({ maxDepth: 6 }),
      fc.record({ return: fc.jsonValue({ maxDepth: 4 }), id: fc.jsonValue({ maxDepth: 3 }) }).map((o) => JSON.stringify(o)),
      fc.record({ event: fc.jsonValue({ maxDepth: 2 }), data: fc.jsonValue({ maxDepth: 3 }), timestamp: fc.jsonValue({ maxDepth: 2 }) }).map((o) => JSON.stringify(o)),
      fc.record({ error: fc.jsonValue({ maxDepth: 3 }), id: fc.string() }).map((o) => JSON.stringify(o)),
      fc.string({ unit: 'binary', maxLength: 500 }),
    );
    fc.assert(
      fc.property(json, (line) => {
        const m = timed(() => parseMessage(line));
        if (m instanceof Error) expect(m).toBeInstanceOf(QmpProtocolError);
        const g = timed(() => parseGreeting(line));
        if (g instanceof Error) expect(g).toBeInstanceOf(QmpProtocolError);
      }),
      params,
    );
  });

  test('JSON nested 100 000 deep in any member: a value or a QmpProtocolError, never a stack overflow', () => {
    for (const line of [`{"return":1,"id":${deep(100_000)}}`, `{"event":"X","data":{"a":${deep(100_000)}}}`, `{"return":${deep(100_000)},"id":"1"}`, `{"QMP":${deep(100_000)}}`]) {
      const m = parseMessage(line);
      if (m instanceof Error) expect(m).toBeInstanceOf(QmpProtocolError);
      const g = parseGreeting(line);
      if (g instanceof Error) expect(g).toBeInstanceOf(QmpProtocolError);
    }
  });

  /** A socket that is an EventEmitter the test feeds. */
  function fakeSocket(): Socket & EventEmitter {
    const s = new EventEmitter() as Socket & EventEmitter;
    Object.assign(s, { pause: () => s, resume: () => s, destroy: () => s.emit('close'), end: () => s });
    return s;
  }

  test('LineStream: any chunks (invalid UTF-8, no newline, lines past the limit) give lines within the limit or an overflow', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(Buffer.from('\n'), Buffer.from('\r\n'), Buffer.from([0xff, 0xfe, 0x0a]))), { maxLength: 40 }), async (chunks) => {
        const socket = fakeSocket();
        const limit = 256;
        const ls = new LineStream(socket, { maxLineBytes: limit, maxQueuedLines: 8 });
        for (const c of chunks) socket.emit('data', Buffer.from(c));
        socket.emit('end');
        socket.emit('close');
        for (;;) {
          const line = await ls.readLine();
          if (line === null) break;
          expect(Buffer.byteLength(line, 'utf8')).toBeLessThanOrEqual(3 * limit); // U+FFFD is 3 bytes
        }
        const end = await ls.closed;
        expect(['eof', 'overflow', 'closed', 'error']).toContain(end.kind);
      }),
      { ...params, numRuns: Math.ceil(RUNS / 3) },
    );
  });
});
