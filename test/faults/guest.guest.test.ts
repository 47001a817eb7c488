import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { stopAllGuests } from '../helpers/guest.js';
import { killMonitors } from '../helpers/monitor-cli.js';
import { guestScenarios } from './guest-scenarios.js';
import { clean, formatScoreboard } from './scoreboard.js';

/**
 * The quick guest faults of the fault suite (issue 13 §2), one at a time against a real QEMU guest and
 * the compiled monitor (`npm run build` first): each row must be clean (passes, visible, no crash, no
 * false hang). `FAULTS=name,name` runs the named scenarios instead (the slow ones too: the bench's way
 * to run one); an unknown name fails.
 */
const wanted = process.env['FAULTS']?.split(',').filter(Boolean);
const chosen = wanted === undefined ? guestScenarios.filter((s) => s.quick) : guestScenarios.filter((s) => wanted.includes(s.name));

afterEach(async () => {
  // A scenario stops its own QEMU and monitor on every path; this is the backstop for one that threw.
  killMonitors();
  await stopAllGuests();
});
afterAll(async () => {
  killMonitors();
  await stopAllGuests();
});

describe('guest faults', () => {
  test('FAULTS names known scenarios', () => {
    const unknown = (wanted ?? []).filter((n) => !guestScenarios.some((s) => s.name === n));
    expect(unknown, `known: ${guestScenarios.map((s) => s.name).join(', ')}`).toEqual([]);
    expect(chosen.length).toBeGreaterThan(0);
  });
  test.each(chosen.map((s) => [s.name, s] as const))('%s', { timeout: 240_000 }, async (_name, s) => {
    const row = await s.run();
    console.log(`${formatScoreboard([row])}\n${JSON.stringify(row)}`);
    expect(clean(row), formatScoreboard([row])).toBe(true);
  });
});
