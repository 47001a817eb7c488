import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { LineSplitter, type SplitLine } from '../../host-reader/console/line-splitter.js';
import { DEFAULT_MAX_ENTRY_CHARS, parseLogEntry, timestampMs, type LogEntryParse } from '../../host-reader/console/log-entry.js';
import { params, SLOW_MS, timed } from './budget.js';

/**
 * The log-entry decoders fuzzed (issue 13 §1): EVE's JSON log lines (the guest wrote `content`, and
 * with a console chardev every byte of the line) and the splitter that cuts the byte stream into
 * them. For random input and mutations of valid lines, parseLogEntry returns a LogEntryParse (never a
 * throw), bounded by the line it was given, quickly; LineSplitter returns what a reference split of
 * the whole stream says, every line and its carry bounded by maxLineBytes. Seeded and with a fixed
 * budget as test/fuzz/decoders.test.ts; FUZZ_RUNS=N raises it.
 */


const REASONS = ['too-long', 'not-json', 'not-an-object', 'no-content'];
const DATE_RANGE_MS = 8.64e15;

/** What every parse must be, whatever the line: a LogEntryParse within the bounds of its line. */
function checkParse(r: LogEntryParse, line: string, maxChars: number): void {
  if (!r.ok) {
    expect(REASONS).toContain(r.reason);
    if (line.length > maxChars) expect(r.reason).toBe('too-long');
    return;
  }
  expect(line.length).toBeLessThanOrEqual(maxChars);
  const e = r.entry;
  expect(typeof e.content).toBe('string');
  expect(e.content.length).toBeLessThanOrEqual(line.length);
  for (const s of [e.severity, e.source]) if (s !== undefined) expect(s.length).toBeLessThanOrEqual(256);
  if (e.timestampMs !== undefined) checkTime(e.timestampMs);
  if (e.msgid !== undefined) expect(e.msgid).toMatch(/^\d{1,20}$/);
  expect(Object.keys(e).every((k) => ['content', 'severity', 'source', 'timestampMs', 'msgid'].includes(k))).toBe(true);
}

/** A time is a number Date can hold (toISOString would throw a RangeError on anything else). */
function checkTime(t: number): void {
  expect(Number.isFinite(t)).toBe(true);
  expect(Math.abs(t)).toBeLessThanOrEqual(DATE_RANGE_MS);
  expect(() => new Date(t).toISOString()).not.toThrow();
}

// -- inputs ------------------------------------------------------------------------------------------

const hugeNumber = fc.constantFrom(1e308, -1e308, 8.64e12, 8.64e12 + 1, -8.64e12, 1e21, 2 ** 53, 2 ** 53 + 2, -0, 5e-324, 1.5, 999_999_999, 1e300);
const hugeNumberText = fc.constantFrom('1e400', '-1e400', '123456789012345678901234567890', '9'.repeat(400), '-0', '0.000001e-400', '18446744073709551616', '1E+308');
const numberish: fc.Arbitrary<unknown> = fc.oneof(fc.double(), fc.integer(), hugeNumber, fc.stringMatching(/^-?\d{1,25}$/), hugeNumberText.map(Number), fc.string({ maxLength: 30 }));
const timestampArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.record({ seconds: numberish, nanos: numberish }, { requiredKeys: [] }),
  fc.date({ noInvalidDate: false }).map((d) => (Number.isNaN(d.getTime()) ? 'Invalid Date' : d.toISOString())),
  fc.constantFrom('+275760-09-13T00:00:00.000Z', '+275760-09-13T00:00:00.001Z', '-271821-04-20T00:00:00.000Z', '2026-12-03T06:00:00.5Z', '2026-12-03T23:59:60Z', 'Thu, 01 Jan 1970 00:00:00 GMT', '0', '1e400'),
  fc.string({ maxLength: 80 }),
  fc.jsonValue({ maxDepth: 3 }),
);

/** A LogEntry as newlogd or eden writes it, with every field possibly of another type or missing. */
const entryObject = fc.record(
  {
    severity: fc.oneof(fc.constantFrom('INFO', 'error', 'debug'), fc.string({ maxLength: 300 }), fc.jsonValue({ maxDepth: 2 })),
    source: fc.oneof(fc.constantFrom('guest_vm-x.1.1', 'guest_vm'), fc.string({ maxLength: 300 }), fc.jsonValue({ maxDepth: 2 })),
    content: fc.oneof(fc.string({ unit: 'binary', maxLength: 500 }), fc.jsonValue({ maxDepth: 2 })),
    msg: fc.oneof(fc.string({ maxLength: 100 }), fc.jsonValue({ maxDepth: 2 })),
    level: fc.string({ maxLength: 20 }),
    msgid: fc.oneof(fc.integer(), hugeNumber, fc.stringMatching(/^\d{1,25}$/), fc.string({ maxLength: 25 })),
    timestamp: timestampArb,
    time: timestampArb,
    iid: fc.string({ maxLength: 20 }),
    tags: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 4 }),
    __proto__: fc.jsonValue({ maxDepth: 2 }),
  },
  { requiredKeys: [] },
);

/** A valid line, cut, with characters overwritten or inserted. */
const mutatedLine = fc
  .record({
    line: entryObject.map((o) => JSON.stringify(o)),
    edits: fc.array(fc.tuple(fc.nat(), fc.constantFrom('"', '{', '}', '[', ']', ',', ':', '\\', '\n', '\r', ' ', 'e', '9', '\u0000', '\ud800', '\u2028')), { maxLength: 8 }),
    cut: fc.option(fc.nat(), { nil: undefined }),
  })
  .map(({ line, edits, cut }) => {
    let s = line;
    for (const [at, ch] of edits) {
      const i = at % (s.length + 1);
      s = s.slice(0, i) + ch + s.slice(i + (at % 2));
    }
    return cut === undefined ? s : s.slice(0, cut % (s.length + 1));
  });

const anyLine = fc.oneof(
  entryObject.map((o) => JSON.stringify(o)),
  mutatedLine,
  fc.string({ unit: 'binary', maxLength: 2000 }),
  fc.json({ maxDepth: 5 }),
  fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b).toString('utf8')),
);

const deep = (n: number, open = '[', close = ']') => open.repeat(n) + close.repeat(n);

describe('parseLogEntry and timestampMs', () => {
  test('parseLogEntry: a LogEntryParse bounded by its line, for any line and bound, never a throw', () => {
    fc.assert(
      fc.property(anyLine, fc.oneof(fc.constant(DEFAULT_MAX_ENTRY_CHARS), fc.integer({ min: 0, max: 3000 })), (line, maxChars) => {
        const r = timed(() => parseLogEntry(line, maxChars));
        checkParse(r, line, maxChars);
      }),
      params,
    );
  });

  test('timestampMs: undefined or a time Date can hold, for any JSON value', () => {
    fc.assert(
      fc.property(fc.oneof(timestampArb, fc.jsonValue({ maxDepth: 4 })), (v) => {
        const t = timed(() => timestampMs(v));
        if (t !== undefined) checkTime(t);
      }),
      params,
    );
  });

  test('the edges of Date: the last millisecond is a time, one more is not', () => {
    expect(timestampMs({ seconds: 8.64e12 })).toBe(DATE_RANGE_MS);
    expect(timestampMs({ seconds: -8.64e12 })).toBe(-DATE_RANGE_MS);
    expect(timestampMs({ seconds: 8.64e12, nanos: 1e6 })).toBeUndefined();
    expect(timestampMs({ seconds: 1, nanos: 1e300 })).toBeUndefined();
    expect(timestampMs({ seconds: '1', nanos: '-9999999999999999999' })).toBeUndefined();
    expect(timestampMs({ seconds: 1e308, nanos: -1e308 })).toBeUndefined();
    expect(timestampMs('+275760-09-13T00:00:00.000Z')).toBe(DATE_RANGE_MS);
    expect(timestampMs('+275760-09-13T00:00:00.001Z')).toBeUndefined();
  });

  test('JSON nested 100 000 deep, huge numbers and strings: a result within its bound, quickly', () => {
    const big = 1 << 21;
    const lines = [
      deep(100_000),
      `{"content":"x","timestamp":${deep(100_000)}}`,
      `{"content":"x","severity":${deep(100_000, '{"a":', '}').replace(/\{"a":\}/, '{"a":1}')}}`,
      `{"content":${deep(100_000)}}`,
      `{"content":"${'x'.repeat(big - 20)}"}`,
      `{"content":"${'\\u0000'.repeat(100_000)}","msgid":${'9'.repeat(400)}}`,
      `{"content":"x","msgid":1e400,"timestamp":{"seconds":1e400,"nanos":-1e400}}`,
      `{"content":"x","msgid":"${'1'.repeat(21)}","timestamp":{"seconds":"${'9'.repeat(19)}"}}`,
      `{${'"a":1,'.repeat(200_000)}"content":"last"}`,
      `${' '.repeat(big - 20)}{"content":"x"}`,
    ];
    for (const line of lines) {
      for (const maxChars of [DEFAULT_MAX_ENTRY_CHARS, big]) {
        const r = timed(() => parseLogEntry(line, maxChars));
        checkParse(r, line, maxChars);
      }
    }
    // An array is not a log line (unparsed); one nested in an object parses; past the bound, unread.
    expect(parseLogEntry(deep(100_000), big)).toEqual({ ok: false, reason: 'not-json' });
    expect(parseLogEntry(`{"a":${deep(100_000)}}`, big)).toEqual({ ok: false, reason: 'no-content' });
    expect(parseLogEntry(`{"content":"x"}`.padEnd(DEFAULT_MAX_ENTRY_CHARS + 1))).toEqual({ ok: false, reason: 'too-long' });
    expect(parseLogEntry(`{"content":${deep(100_000)}}`, big)).toEqual({ ok: false, reason: 'no-content' });
    expect(parseLogEntry(`{${'"a":1,'.repeat(200_000)}"content":"last"}`, big)).toEqual({ ok: true, entry: { content: 'last' } });
  });
});

// -- LineSplitter ------------------------------------------------------------------------------------

/** The reference: split the whole stream at once; a line over the bound keeps its head, flagged cut. */
function referenceSplit(stream: Buffer, max: number): { lines: SplitLine[]; carried: number; cutLines: number; droppedBytes: number } {
  const lines: SplitLine[] = [];
  let cutLines = 0;
  let droppedBytes = 0;
  let start = 0;
  const text = (b: Buffer) => b.toString('utf8').replace(/\r+$/, '');
  for (;;) {
    const nl = stream.indexOf(0x0a, start);
    const line = stream.subarray(start, nl < 0 ? stream.length : nl);
    if (line.length > max) {
      lines.push({ text: text(line.subarray(0, max)), cut: true });
      cutLines++;
      droppedBytes += line.length - max;
    } else if (nl >= 0) {
      lines.push({ text: text(line), cut: false });
    }
    if (nl < 0) return { lines, carried: line.length > max ? 0 : line.length, cutLines, droppedBytes };
    start = nl + 1;
  }
}

/** Bytes a hostile stream is made of: newlines, CRs, invalid and split UTF-8, plain runs. */
const streamPiece = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.constantFrom(Buffer.from('\n'), Buffer.from('\r\n'), Buffer.from('\r\r'), Buffer.from([0xff, 0xfe]), Buffer.from([0xe2, 0x82]), Buffer.from([0xac, 0x0a]), Buffer.from([0xc0, 0x80]), Buffer.from([0xed, 0xa0, 0x80])),
  fc.record({ byte: fc.integer({ min: 0, max: 255 }), n: fc.nat({ max: 2000 }) }).map(({ byte, n }) => Buffer.alloc(n, byte)),
);

/** A stream and where it is cut into chunks. */
const chunkedStream = fc.record({ pieces: fc.array(streamPiece, { maxLength: 30 }), cuts: fc.array(fc.nat(), { maxLength: 20 }) }).map(({ pieces, cuts }) => {
  const stream = Buffer.concat(pieces);
  const at = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, stream.length]) {
    chunks.push(stream.subarray(prev, c));
    prev = c;
  }
  return { stream, chunks };
});

describe('LineSplitter', () => {
  test('any chunking of any stream: the lines of the reference split, each within maxLineBytes, the carry too', () => {
    fc.assert(
      fc.property(chunkedStream, fc.integer({ min: 1, max: 300 }), ({ stream, chunks }, max) => {
        const s = new LineSplitter(max);
        const got: SplitLine[] = [];
        for (const c of chunks) {
          // The caller may reuse its buffer: push a copy and scribble over it afterwards.
          const copy = Buffer.from(c);
          for (const l of timed(() => s.push(copy))) got.push(l);
          copy.fill(0x0a);
          expect(s.carried).toBeLessThanOrEqual(max);
        }
        const want = referenceSplit(stream, max);
        expect(got).toEqual(want.lines);
        expect(s.carried).toBe(want.carried);
        expect(s.cutLines).toBe(want.cutLines);
        expect(s.droppedBytes).toBe(want.droppedBytes);
        for (const l of got) {
          expect(l.text.length).toBeLessThanOrEqual(max);
          expect(Buffer.byteLength(l.text, 'utf8')).toBeLessThanOrEqual(3 * max); // U+FFFD is 3 bytes
          expect(l.text.includes('\n')).toBe(false);
        }
      }),
      params,
    );
  });

  test('reset and resync anywhere: lines stay within the bound, and after a resync the head up to a newline is gone', () => {
    const op = fc.oneof(
      { weight: 4, arbitrary: streamPiece.map((b) => ({ push: Buffer.from(b) })) },
      { weight: 1, arbitrary: fc.constantFrom({ reset: true }, { resync: true }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), fc.integer({ min: 1, max: 300 }), (ops, max) => {
        const s = new LineSplitter(max);
        let resynced = false;
        for (const o of ops) {
          if ('reset' in o) {
            s.reset();
            resynced = false;
          } else if ('resync' in o) {
            s.resync();
            resynced = true;
          } else {
            const nl = o.push.indexOf(0x0a);
            const lines = timed(() => s.push(o.push));
            if (resynced && nl >= 0) {
              // The first line out is the one after the first newline (its bytes, possibly cut), never the tail before it.
              const want = referenceSplit(o.push.subarray(nl + 1), max).lines[0];
              expect(lines[0]).toEqual(want);
              resynced = false;
            } else if (resynced) {
              expect(lines).toEqual([]);
            }
            for (const l of lines) expect(l.text.length).toBeLessThanOrEqual(max);
          }
          expect(s.carried).toBeLessThanOrEqual(max);
        }
      }),
      params,
    );
  });

  test('lines of megabytes and a stream with no newline for 64 MiB: each push quick, memory bounded by the bound', () => {
    const max = 64 * 1024;
    const s = new LineSplitter(max);
    const chunk = Buffer.alloc(1024 * 1024, 0x41);
    for (let i = 0; i < 64; i++) {
      expect(timed(() => s.push(chunk)).length).toBe(i === 0 ? 1 : 0);
      expect(s.carried).toBe(0);
    }
    expect(s.cutLines).toBe(1);
    expect(s.droppedBytes).toBe(64 * chunk.length - max);
    // Megabyte lines back to back (one chunk of 3 of them), then a short one: three cuts and the short line.
    const lines = Buffer.concat([Buffer.from('\n'), ...[1, 2, 3].map((n) => Buffer.concat([Buffer.alloc(n * 1024 * 1024, 0x42), Buffer.from('\n')])), Buffer.from('ok\r\n')]);
    const out = timed(() => s.push(lines));
    expect(out.map((l) => [l.text.length, l.cut])).toEqual([
      [max, true],
      [max, true],
      [max, true],
      [2, false],
    ]);
    // Small chunks without a newline: each push copies at most the carry (maxLineBytes), so a slow writer costs O(max) per push.
    const slow = new LineSplitter(max);
    const byte = Buffer.from('z');
    const t0 = performance.now();
    for (let i = 0; i < max; i++) slow.push(byte);
    expect(slow.carried).toBe(max);
    expect(performance.now() - t0).toBeLessThan(SLOW_MS * 5);
    expect(slow.push(byte)).toEqual([{ text: 'z'.repeat(max), cut: true }]);
  });

  test('invalid UTF-8 throughout: every line decodes (U+FFFD) and parses as a LogEntryParse', () => {
    fc.assert(
      fc.property(chunkedStream, ({ chunks }) => {
        const s = new LineSplitter(4096);
        for (const c of chunks) {
          for (const l of s.push(c)) checkParse(timed(() => parseLogEntry(l.text, s.maxLineBytes)), l.text, s.maxLineBytes);
        }
      }),
      params,
    );
  });
});
