import { describe, expect, it } from 'vitest';
import { formatChecks, formatMark, MARK_PATTERN, parseMark } from '../../protocol/mark.js';

const stats = { uptime: '734.21', load: '0.08', memAvail: '401236kB' };

describe('formatMark / parseMark', () => {
  it('formats the documented line', () => {
    expect(formatMark({ seq: 12, stats, version: '0.1.0' })).toBe('eve-diag mark seq=12 uptime=734.21 load=0.08 mem_avail=401236kB agent=0.1.0');
  });

  it('appends the checks in order', () => {
    const line = formatMark({
      seq: 1,
      stats,
      version: '0.1.0',
      checks: [
        { name: 'web', outcome: { ok: true } },
        { name: 'db', outcome: { ok: false, reason: 'timeout' } },
      ],
    });
    expect(line).toBe('eve-diag mark seq=1 uptime=734.21 load=0.08 mem_avail=401236kB agent=0.1.0 check.web=ok check.db=fail:timeout');
  });

  it('parses a mark back, also after a syslog header', () => {
    const line = formatMark({ seq: 3, stats, version: '0.1.0', checks: [{ name: 'db', outcome: { ok: false, reason: 'refused' } }] });
    expect(parseMark(`Jan  1 00:00:05 vm user.info eve-diag-agent: ${line}`)).toEqual({
      seq: 3,
      fields: { seq: '3', uptime: '734.21', load: '0.08', mem_avail: '401236kB', agent: '0.1.0', 'check.db': 'fail:refused' },
    });
    expect(parseMark('nothing here')).toBeUndefined();
    expect(parseMark('eve-diag mark seq=x')).toBeUndefined();
    expect(parseMark('eve-diag mark seq=1 junk')).toBeUndefined();
  });

  it('rejects a bad sequence number (programmer error)', () => {
    expect(() => formatMark({ seq: -1, stats, version: 'v' })).toThrow(/seq/);
    expect(() => formatMark({ seq: 1.5, stats, version: 'v' })).toThrow(/seq/);
  });
});

describe('MARK_PATTERN and bounds', () => {
  it('matches a mark with its seq in group 1', () => {
    const m = new RegExp(MARK_PATTERN).exec(`<14>eve-diag-agent: ${formatMark({ seq: 42, stats, version: 'v' })}`);
    expect(m?.[1]).toBe('42');
  });

  it('formats checks in order', () => {
    expect(formatChecks([{ name: 'web', outcome: { ok: true } }, { name: 'db', outcome: { ok: false, reason: 'refused' } }])).toBe(
      'check.web=ok check.db=fail:refused',
    );
  });

  it('refuses a line with too many fields, and keys such as __proto__ stay plain data', () => {
    expect(parseMark(`eve-diag mark seq=1 ${Array.from({ length: 100 }, (_, i) => `k${i}=v`).join(' ')}`)).toBeUndefined();
    const p = parseMark('eve-diag mark seq=1 __proto__=x constructor=y');
    expect(p?.fields['__proto__']).toBe('x');
    expect(Object.getPrototypeOf(p?.fields)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>)['x']).toBeUndefined();
  });
});
