import { expect, test } from 'vitest';
import { parseConfig } from '../../../monitor/config.js';
import { createProbe, PROBE_TYPES, QmpLinks } from '../../../monitor/probes/index.js';

test('createProbe makes every probe type the schema allows, from a parsed configuration', () => {
  const scenarios = PROBE_TYPES.map((t) => `      - name: ${t}\n        probe: { type: ${t}${t === 'tcp' ? ', params: { port: 22 }' : ''} }\n`).join('');
  const config = parseConfig(`apps:\n  - name: vm\n    scenarios:\n${scenarios}`, 'monitor.yaml', { baseDir: '/x' });
  const links = new QmpLinks();
  const kinds = config.apps[0]?.scenarios.map((s) => createProbe(s.probe, { links, periodMs: s.timing.periodMs }).kind);
  expect(kinds).toEqual([...PROBE_TYPES]);
});

test('invalid params are programmer errors, thrown at once', () => {
  const links = new QmpLinks();
  expect(() => createProbe({ type: 'tcp', params: { port: 0 } }, { links, periodMs: 1000 })).toThrow(RangeError);
  expect(() => createProbe({ type: 'kernel-heartbeat', params: { memory: 'file' } }, { links, periodMs: 1000 })).toThrow(/memPath/);
  expect(() => createProbe({ type: 'console-passive', params: { pattern: '(' } }, { links, periodMs: 1000 })).toThrow(/pattern/);
});
