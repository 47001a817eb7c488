import { describe, expect, it } from 'vitest';
import { QmpProtocolError } from '../../../host-reader/qmp/errors.js';
import { parseGreeting, parseMessage } from '../../../host-reader/qmp/messages.js';

describe('parseGreeting', () => {
  it('reads the QEMU 7.2 greeting', () => {
    const line =
      '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}';
    expect(parseGreeting(line)).toEqual({
      version: { major: 7, minor: 2, micro: 22, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
      capabilities: ['oob'],
    });
  });

  it.each([
    ['not JSON', '{"QMP": '],
    ['no QMP key', '{"return": {}}'],
    ['a string version', '{"QMP": {"version": {"qemu": "7.2"}, "capabilities": []}}'],
    ['a negative version', '{"QMP": {"version": {"qemu": {"major": -1, "minor": 0, "micro": 0}}, "capabilities": []}}'],
    ['non-string capabilities', '{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": [1]}}'],
    ['null', 'null'],
  ])('returns a bad-greeting error for %s', (_label, line) => {
    const result = parseGreeting(line);
    expect(result).toBeInstanceOf(QmpProtocolError);
    expect(result).toMatchObject({ reason: 'bad-greeting' });
  });
});

describe('parseMessage', () => {
  it('reads replies, error replies and events as QEMU 7.2 writes them', () => {
    expect(parseMessage('{"return": {"status": "running", "singlestep": false, "running": true}, "id": "x2"}')).toEqual({
      kind: 'reply',
      id: 'x2',
      value: { status: 'running', singlestep: false, running: true },
      error: undefined,
    });
    expect(parseMessage('{"id": "x3", "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}')).toEqual({
      kind: 'reply',
      id: 'x3',
      value: undefined,
      error: { errorClass: 'CommandNotFound', desc: 'The command nope has not been found' },
    });
    expect(parseMessage('{"timestamp": {"seconds": 1795692364, "microseconds": 448200}, "event": "STOP"}')).toEqual({
      kind: 'event',
      event: { event: 'STOP', data: {}, timestamp: { seconds: 1795692364, microseconds: 448200 } },
    });
  });

  it('keeps a foreign non-string id from matching any of ours', () => {
    const parsed = parseMessage('{"return": {}, "id": 5}');
    expect(parsed).toMatchObject({ kind: 'reply' });
    expect((parsed as { id: string }).id.startsWith('eve-diag:')).toBe(false);
  });

  it('never throws, whatever the line', () => {
    const hostile = [
      '',
      'null',
      '"string"',
      '{"__proto__": {"polluted": true}, "return": 1, "id": "a"}',
      `${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`,
      '{"event": "X", "data": [1]}',
      '{"event": "X", "timestamp": "now"}',
      '\u0000\u001b[31m',
    ];
    for (const line of hostile) expect(() => parseMessage(line)).not.toThrow();
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(parseMessage('{"event": "X", "data": [1]}')).toBeInstanceOf(QmpProtocolError);
    expect(parseMessage('{"event": "X", "timestamp": "now"}')).toMatchObject({ event: { timestamp: undefined } });
  });

  it('bounds the excerpt of a huge bad line', () => {
    const error = parseMessage(`garbage ${'x'.repeat(1_000_000)}`) as QmpProtocolError;
    expect(error.reason).toBe('bad-json');
    expect(error.excerpt.length).toBeLessThanOrEqual(170);
    expect(error.message.length).toBeLessThan(400);
    expect(error.lineBytes).toBe(1_000_008);
  });
});
