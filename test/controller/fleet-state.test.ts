import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { openStore } from '../../controller/store/open.js';
import { tempDirs } from '../helpers/temp-dirs.js';

/**
 * The fleet state (migration 5) is kept by addEvents, batch by batch, for the apps each batch touched:
 * after any sequence of batches (events out of order, repeated, of several nodes and apps) it equals
 * the state recomputed from every event at once (refreshFleet), and it follows the rule: the newest
 * event's verdict, since the first event of that verdict after the last event of another.
 */
const temp = tempDirs('eve-diag-fleet-');

const VERDICTS = ['running-healthy', 'guest-kernel-hung', 'vm-not-running'] as const;
const event = fc.record({ node: fc.constantFrom('n1', 'n2'), app: fc.constantFrom('a', 'b', 'c'), id: fc.integer({ min: 0, max: 30 }), verdict: fc.constantFrom(...VERDICTS), minute: fc.integer({ min: 0, max: 40 }) });

describe('fleet state', () => {
  test('incremental (per batch) equals recomputed from all events, and the rule holds', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(event, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 8 }), async (batches) => {
        const store = await openStore({ data: temp() });
        try {
          const seen = new Map<string, { id: string; verdict: string; at: string; key: number }>();
          let key = 0;
          for (const batch of batches) {
            const byNode = new Map<string, typeof batch>();
            for (const e of batch) byNode.set(e.node, [...(byNode.get(e.node) ?? []), e]);
            for (const [node, evs] of byNode) {
              const id = (await store.nodeId(node)) as number;
              const mapped = evs.map((e) => ({ id: `${e.app}-${e.id}`, app: e.app, verdict: e.verdict, reason: `r${e.id}`, at: new Date(Date.UTC(2026, 11, 1, 0, e.minute)).toISOString() }));
              await store.addEvents(id, mapped);
              for (const m of mapped) if (!seen.has(`${node}/${m.id}`)) seen.set(`${node}/${m.id}`, { id: m.id, verdict: m.verdict, at: m.at, key: ++key });
            }
          }
          const incremental = await store.fleet();
          await store.refreshFleet();
          expect(await store.fleet()).toEqual(incremental);
          // The rule, from the events as the test kept them (first copy of an id wins, as ON CONFLICT DO NOTHING).
          for (const row of incremental) {
            const evs = [...seen].filter(([k]) => k.startsWith(`${row.node}/${row.app}-`)).map(([, v]) => v);
            const newest = [...evs].sort((x, y) => (x.at === y.at ? y.key - x.key : x.at < y.at ? 1 : -1))[0]!;
            expect(row.verdict).toBe(newest.verdict);
            const lastOther = evs.filter((e) => e.verdict !== newest.verdict).map((e) => e.at).sort().at(-1) ?? '';
            const since = evs.filter((e) => e.verdict === newest.verdict && e.at > lastOther).map((e) => e.at).sort()[0] ?? newest.at;
            expect(row.since).toBe(since);
          }
          expect(incremental).toHaveLength(new Set([...seen.keys()].map((k) => k.replace(/-\d+$/, ''))).size);
        } finally {
          await store.close();
        }
      }),
      { numRuns: 40, seed: 20261203 },
    );
  }, 120_000);
});
