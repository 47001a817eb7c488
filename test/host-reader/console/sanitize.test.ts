import { describe, expect, test } from 'vitest';
import { sanitizeLine, sanitizeText } from '../../../host-reader/console/sanitize.js';

describe('sanitizeText', () => {
  test.each<[string, string, string]>([
    ['plain text is kept', 'hello world\n', 'hello world\n'],
    ['tabs and newlines are kept', 'a\tb\nc', 'a\tb\nc'],
    ['CR LF becomes LF', 'line 1\r\nline 2\r\n', 'line 1\nline 2\n'],
    ['CR CR LF becomes LF', 'x\r\r\ny', 'x\ny'],
    ['a lone CR becomes LF', 'progress 10%\rprogress 20%', 'progress 10%\nprogress 20%'],
    ['SGR colours go', '\x1b[1;31mred\x1b[0m', 'red'],
    ['cursor movement and clear screen go', '\x1b[2J\x1b[H\x1b[?25lx\x1b[10;20H', 'x'],
    ['8-bit CSI goes', '\u009b31mred', 'red'],
    ['OSC title ended by BEL goes', '\x1b]0;evil title\x07after', 'after'],
    ['OSC 8 hyperlink ended by ST goes', '\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\', 'link'],
    ['DCS goes', '\x1bPq#0;2;0;0;0\x1b\\ok', 'ok'],
    ['two-byte escapes go', '\x1b(B\x1b7\x1bcok', 'ok'],
    ['C0 controls go', 'a\x00b\x07c\x08d\x7fe', 'abcde'],
    ['C1 controls go', 'a\u0085b\u009cc', 'abc'],
    ['bidi overrides go', 'admin\u202e\u2066txt', 'admintxt'],
    ['a lone ESC at the end goes', 'end\x1b', 'end'],
    ['unicode text stays', 'température 25 °C ✓', 'température 25 °C ✓'],
  ])('%s', (_name, input, expected) => {
    expect(sanitizeText(input).text).toBe(expected);
  });

  test('bytes are decoded as UTF-8, invalid sequences become U+FFFD', () => {
    expect(sanitizeText(Buffer.from([0x6f, 0x6b, 0xff, 0x0d, 0x0a])).text).toBe('ok\ufffd\n');
    expect(sanitizeText(Buffer.from('°C\r\n', 'utf8')).text).toBe('°C\n');
  });

  test('an unterminated OSC does not swallow the rest of the log', () => {
    const text = `\x1b]0;${'a'.repeat(10_000)}\nnext line\n`;
    expect(sanitizeText(text).text).toContain('next line');
  });

  test('is idempotent', () => {
    const nasty = '\x1b[31m\x1b]0;t\x07a\r\nb\rc\u009b1m\u202e\x1b\x1b[[x\x00';
    const once = sanitizeText(nasty).text;
    expect(sanitizeText(once).text).toBe(once);
  });

  test('bounds the result in UTF-8 bytes, keeping the head', () => {
    const r = sanitizeText('é'.repeat(100), { maxBytes: 11 });
    expect(r.text).toBe('é'.repeat(5)); // 10 bytes: a 2-byte character is never split
    expect(r.truncated).toBe(true);
  });

  test('bounds the result keeping the tail', () => {
    const r = sanitizeText('0123456789', { maxBytes: 4, keep: 'tail' });
    expect(r).toEqual({ text: '6789', truncated: true });
  });

  test('a tail cut of bytes in the middle of a character drops the broken character', () => {
    // maxBytes 1: the work window is 4098 bytes, which starts in the last byte of the euro sign.
    const bytes = Buffer.from(`€${'a'.repeat(4097)}`, 'utf8');
    const r = sanitizeText(bytes, { maxBytes: 1, keep: 'tail' });
    expect(r).toEqual({ text: 'a', truncated: true });
  });

  test('huge input is cut before any work: the result respects maxBytes', () => {
    const big = `${'\x1b[0mx\n'.repeat(1_000_000)}z`;
    const r = sanitizeText(big, { maxBytes: 1000, keep: 'tail' });
    expect(r.text.endsWith('x\nz')).toBe(true);
    expect(r.text).toMatch(/^\n?(x\n)+z$/); // no escape remainder like `[0m`
    expect(r.truncated).toBe(true);
    expect(sanitizeText('x'.repeat(5_000_000), { maxBytes: 100 }).text).toHaveLength(100);
  });

  test('short text is not truncated', () => {
    expect(sanitizeText('abc', { maxBytes: 3 })).toEqual({ text: 'abc', truncated: false });
  });

  test('bad options throw', () => {
    expect(() => sanitizeText('x', { maxBytes: -1 })).toThrow(RangeError);
    expect(() => sanitizeText('x', { keep: 'middle' as 'head' })).toThrow(RangeError);
  });
});

describe('sanitizeLine', () => {
  test('one line, whitespace collapsed, escapes gone', () => {
    expect(sanitizeLine('  a\r\n\x1b[31mb\tc  \n')).toBe('a b c');
  });
  test('cut with an ellipsis', () => {
    expect(sanitizeLine('abcdefghij', 5)).toBe('abcd…');
  });
});
