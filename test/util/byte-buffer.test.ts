import { describe, expect, it } from 'vitest';
import { ByteBuffer } from '../../util/byte-buffer.js';

describe('ByteBuffer', () => {
  it('holds pushed bytes in order and gives back what is consumed', () => {
    const b = new ByteBuffer(8);
    expect(b.push(Buffer.from('abc'))).toBe(true);
    expect(b.push(Buffer.from('de'))).toBe(true);
    expect(b.bytes().toString()).toBe('abcde');
    b.consume(2);
    expect(b.bytes().toString()).toBe('cde');
    // Room is made by moving the held bytes to the front, not by growing.
    expect(b.push(Buffer.from('fghij'))).toBe(true);
    expect(b.bytes().toString()).toBe('cdefghij');
    expect(b.length).toBe(8);
  });

  it('never holds more than its capacity: an overflowing push keeps nothing of it', () => {
    const b = new ByteBuffer(4);
    expect(b.push(Buffer.from('abc'))).toBe(true);
    expect(b.push(Buffer.from('de'))).toBe(false);
    expect(b.bytes().toString()).toBe('abc');
    expect(b.received).toBe(5);
    expect(() => b.consume(4)).toThrow(RangeError);
    b.clear();
    expect(b.length).toBe(0);
    expect(() => new ByteBuffer(0)).toThrow(RangeError);
  });

  it('takes 64 Ki one-byte pushes in linear time (each byte copied once or twice)', () => {
    const b = new ByteBuffer(65536);
    const one = Buffer.from([0x41]);
    const t0 = performance.now();
    for (let i = 0; i < 65536; i++) b.push(one);
    expect(b.length).toBe(65536);
    expect(b.push(one)).toBe(false);
    // Re-concatenating on every push copies ~2 GiB here; this is well under a second either way
    // on a loaded machine only when it is linear.
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});
