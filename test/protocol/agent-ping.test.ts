import { describe, expect, it } from 'vitest';
import { formatPing, formatPong, LineSplitter, parsePing, parsePong, reply } from '../../protocol/agent-ping.js';

const stats = { uptime: '734.21', load: '0.08', memAvail: '1kB' };

describe('LineSplitter', () => {
  it('splits across chunks, drops CR before LF', () => {
    const s = new LineSplitter();
    expect(s.push(Buffer.from('PI'))).toEqual([]);
    expect(s.push(Buffer.from('NG 1\r\nPING 2\nPI'))).toEqual(['PING 1', 'PING 2']);
    expect(s.push(Buffer.from('NG 3\n'))).toEqual(['PING 3']);
  });

  it('drops a line longer than the bound, up to its end, and holds at most the bound', () => {
    const s = new LineSplitter(16);
    expect(s.push(Buffer.from('x'.repeat(10)))).toEqual([]);
    expect(s.push(Buffer.from('x'.repeat(10)))).toEqual([]); // over 16: discarding
    expect(s.push(Buffer.from('y'.repeat(100_000)))).toEqual([]);
    expect(s.push(Buffer.from('tail\nPING 4\n'))).toEqual(['PING 4']);
    expect(s.push(Buffer.from('a'.repeat(16) + '\n'))).toEqual(['a'.repeat(16)]);
  });

  it('keeps no reference to the caller’s buffer', () => {
    const s = new LineSplitter();
    const b = Buffer.from('PING 5');
    s.push(b);
    b.fill(0x41);
    expect(s.push(Buffer.from('\n'))).toEqual(['PING 5']);
  });
});

describe('reply', () => {
  it.each([
    ['PING 42', 'PONG 42 uptime=734.21 load=0.08'],
    ['  PING 7  ', 'PONG 7 uptime=734.21 load=0.08'],
    ['PING 18446744073709551615', 'PONG 18446744073709551615 uptime=734.21 load=0.08'],
  ])('%j -> %j', (line, want) => expect(reply(line, stats)).toBe(want));

  it.each(['PING', 'PING x', 'PING 123456789012345678901', 'ping 1', 'PONG 1', 'PING 1 2', '\u0000PING 1', ''])('ignores %j', (line) => {
    expect(reply(line, stats)).toBeUndefined();
  });
});

describe('PING and PONG both ways', () => {
  it('formats and parses what the other side sends', () => {
    expect(formatPing('17')).toBe('PING 17');
    expect(parsePing(formatPing('17'))).toBe('17');
    expect(() => formatPing('1x')).toThrow(/1 to 20 digits/);
    expect(parsePong(formatPong('17', stats))).toEqual({ n: '17', uptimeS: 734.21, load: 0.08 });
    expect(parsePong('PONG 3 uptime=? load=?')).toEqual({ n: '3' });
  });

  it.each(['PONG', 'PONG 1', 'PONG 1 uptime=1', 'PONG 1 uptime=1 load=1 extra', 'PONG 1 uptime=-1 load=0', 'PONG 1 uptime=1e9 load=0', 'PONG 1 uptime=NaN load=0', `PONG 1 uptime=${'9'.repeat(30)} load=0`])(
    'refuses a PONG it cannot trust: %j',
    (line) => expect(parsePong(line)).toBeUndefined(),
  );
});
