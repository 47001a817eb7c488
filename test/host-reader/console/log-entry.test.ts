import { describe, expect, test } from 'vitest';
import { LineSplitter } from '../../../host-reader/console/line-splitter.js';
import { parseLogEntry, timestampMs } from '../../../host-reader/console/log-entry.js';

describe('parseLogEntry', () => {
  test('newlogd lines (Go encoding/json of logs.LogEntry)', () => {
    const line = '{"source":"8ce1cc69-e1bb-4fe3-9613-e3eb1c5f5c4d.1.1","content":"[    0.601616][    T1] brd: module loaded","msgid":3,"timestamp":{"seconds":1731935028,"nanos":411281420}}';
    expect(parseLogEntry(line)).toEqual({
      ok: true,
      entry: { content: '[    0.601616][    T1] brd: module loaded', source: '8ce1cc69-e1bb-4fe3-9613-e3eb1c5f5c4d.1.1', msgid: '3', timestampMs: 1731935028411 },
    });
  });

  test('eden pod logs --format=json (protojson) and memlogd lines', () => {
    expect(parseLogEntry('{"severity":"INFO","source":"guest_vm","content":"hello","msgid":"18446744073709551615","timestamp":"2026-12-03T06:00:00.5Z"}')).toEqual({
      ok: true,
      entry: { content: 'hello', severity: 'INFO', source: 'guest_vm', msgid: '18446744073709551615', timestampMs: Date.parse('2026-12-03T06:00:00.5Z') },
    });
    expect(parseLogEntry('{"time":"2026-12-03T06:00:00Z","source":"guest_vm-x.1.1","msg":"console line"}')).toMatchObject({ ok: true, entry: { content: 'console line', source: 'guest_vm-x.1.1' } });
  });

  test('anything else is rejected with a reason, never thrown', () => {
    expect(parseLogEntry('my-app')).toEqual({ ok: false, reason: 'not-json' });
    expect(parseLogEntry('{"content": broken')).toEqual({ ok: false, reason: 'not-json' });
    expect(parseLogEntry('[1]')).toEqual({ ok: false, reason: 'not-json' });
    expect(parseLogEntry('{"severity":"info"}')).toEqual({ ok: false, reason: 'no-content' });
    expect(parseLogEntry('{"content":5}')).toEqual({ ok: false, reason: 'no-content' });
    expect(parseLogEntry(`{"content":"${'x'.repeat(100)}"}`, 50)).toEqual({ ok: false, reason: 'too-long' });
    expect(parseLogEntry('{"__proto__":{"content":"x"}}')).toEqual({ ok: false, reason: 'no-content' });
    // Junk in known fields is dropped, the entry kept.
    expect(parseLogEntry('{"content":"x","msgid":-1,"timestamp":{"seconds":"1e99"},"severity":{}}')).toEqual({ ok: true, entry: { content: 'x' } });
  });

  test('timestampMs', () => {
    expect(timestampMs({ seconds: 1, nanos: 5_000_000 })).toBe(1005);
    expect(timestampMs({ seconds: '2' })).toBe(2000);
    expect(timestampMs('1970-01-01T00:00:03Z')).toBe(3000);
    expect(timestampMs('not a time')).toBeUndefined();
    expect(timestampMs({ seconds: 1e20 })).toBeUndefined();
    expect(timestampMs([1])).toBeUndefined();
  });

  test('timestampMs: nanos outside 0..999 999 999 or a fractional count is no time (it moved the time by years)', () => {
    expect(timestampMs({ seconds: 1, nanos: 999_999_999 })).toBe(1999);
    expect(timestampMs({ seconds: '1', nanos: '-9999999999999999999' })).toBeUndefined();
    expect(timestampMs({ seconds: 1, nanos: 1_000_000_000 })).toBeUndefined();
    expect(timestampMs({ seconds: 1, nanos: -1 })).toBeUndefined();
    expect(timestampMs({ seconds: 1.5 })).toBeUndefined();
    expect(timestampMs({ seconds: 1, nanos: 0.5 })).toBeUndefined();
  });
});

describe('LineSplitter', () => {
  const texts = (s: LineSplitter, chunk: string) => s.push(Buffer.from(chunk, 'utf8')).map((l) => (l.cut ? `CUT:${l.text}` : l.text));

  test('complete lines out, the partial one carried; CRs at the end go', () => {
    const s = new LineSplitter(16);
    expect(texts(s, 'one\r\ntw')).toEqual(['one']);
    expect(s.carried).toBe(2);
    expect(texts(s, 'o\nthree')).toEqual(['two']);
    expect(texts(s, '\n\n')).toEqual(['three', '']);
  });

  test('a line over the bound is cut once and the rest dropped up to its newline', () => {
    const s = new LineSplitter(8);
    expect(texts(s, 'abcdef')).toEqual([]);
    expect(texts(s, 'ghijkl')).toEqual(['CUT:abcdefgh']);
    expect(texts(s, 'x'.repeat(100))).toEqual([]);
    expect(s.carried).toBe(0);
    expect(texts(s, 'yy\nok\n')).toEqual(['ok']);
    expect(s.cutLines).toBe(1);
    expect(s.droppedBytes).toBe(4 + 100 + 2);
  });

  test('resync drops the head of the stream up to the first newline; reset forgets the carry', () => {
    const s = new LineSplitter(64);
    texts(s, 'partial');
    s.resync();
    expect(texts(s, 'tail of a line\nwhole\n')).toEqual(['whole']);
    texts(s, 'again');
    s.reset();
    expect(texts(s, 'fresh\n')).toEqual(['fresh']);
  });

  test('multibyte characters split across chunks decode whole', () => {
    const s = new LineSplitter(64);
    const bytes = Buffer.from('é€\n', 'utf8');
    expect(s.push(bytes.subarray(0, 3))).toEqual([]);
    expect(s.push(bytes.subarray(3)).map((l) => l.text)).toEqual(['é€']);
  });

  test('rejects a bad bound', () => {
    expect(() => new LineSplitter(0)).toThrow(RangeError);
  });
});
