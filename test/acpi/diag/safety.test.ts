import { describe, expect, test } from 'vitest';
import type { AmlTerm } from '../../../acpi/aml/index.js';
import { decodeTable } from '../../../acpi/decode/decode.js';
import { HOT_DK, TMP_DK, TRIP_MAX_DK, TRIP_MIN_DK } from '../../../acpi/diag/layout.js';
import { buildDiagSsdt, type DiagSsdtOptions } from '../../../acpi/diag/ssdt.js';

/**
 * The guest is precious (DESIGN facts 3, 4, 6): these rules are read off the decoded table itself,
 * for several option sets, so a change to the generator that breaks one fails here before any guest.
 */

/** Every term in the tree, depth first, with its enclosing ThermalZone (if any). */
function* walk(terms: readonly AmlTerm[], zone?: string): Generator<{ t: AmlTerm; zone?: string }> {
  for (const t of terms) {
    yield { t, zone };
    const inner = t.kind === 'ThermalZone' ? t.name.toString() : zone;
    if ('body' in t && Array.isArray(t.body)) yield* walk(t.body as AmlTerm[], inner);
    if (t.kind === 'If' && t.elseBody) yield* walk(t.elseBody, inner);
  }
}

const variants: DiagSsdtOptions[] = [
  { nonce: 1n },
  { nonce: 2n, kernelPeriodMs: 100, ringLength: 256 },
  { nonce: 3n, kernelPeriodMs: 3_600_000, ringLength: 4, kernelZone: 'K', agentZone: 'A', scope: '\\' },
];

describe.each(variants)('diagnostic SSDT safety rules (%o)', (opts) => {
  const { aml, layout } = buildDiagSsdt(opts);
  const decoded = decodeTable(aml);
  const all = [...walk(decoded.block.body)];
  const zones = all.filter((x) => x.t.kind === 'ThermalZone');
  const namesIn = (zone: string) =>
    all.filter((x) => x.zone === zone && (x.t.kind === 'Name' || x.t.kind === 'Method')).map((x) => (x.t as { name: { toString(): string } }).name.toString());

  test('the table as built is valid: checksum, decodes', () => {
    expect(decoded.checksumOk).toBe(true);
  });

  test('exactly two thermal zones; the only trip point is _HOT, far above the constant _TMP', () => {
    expect(zones).toHaveLength(2);
    for (const { t } of zones) {
      const zone = (t as { name: { toString(): string } }).name.toString();
      const names = namesIn(zone);
      // _CRT would shut the guest down; _PSV/_ACx/_CR3 would throttle or need companions (fact 3).
      expect(names.filter((n) => /^(_CRT|_CR3|_PSV|_AC\d|_AL\d|_PSL|_TC1|_TC2|_TSP|_SCP|_TZD)$/.test(n))).toEqual([]);
      const hot = all.find((x) => x.zone === zone && x.t.kind === 'Name' && x.t.name.toString() === '_HOT')?.t;
      expect(hot?.kind === 'Name' && hot.value.kind === 'Integer' && hot.value.value).toBe(BigInt(HOT_DK));
      const tmp = all.find((x) => x.zone === zone && x.t.kind === 'Method' && x.t.name.toString() === '_TMP')?.t;
      expect(tmp?.kind).toBe('Method');
      if (tmp?.kind !== 'Method') return;
      // _TMP returns the constant, whatever the beat did: it never returns a value read from memory.
      const returns = [...walk(tmp.body)].filter((x) => x.t.kind === 'Return');
      expect(returns).toHaveLength(1);
      const r = returns[0]?.t;
      expect(r?.kind === 'Return' && r.value.kind === 'Integer' && r.value.value).toBe(BigInt(TMP_DK));
      expect(tmp.body[tmp.body.length - 1]).toBe(r);
    }
  });

  test('_HOT is inside the range every kernel accepts (2180..4480 dK), with a margin, and far above _TMP', () => {
    // Linux >= 6.6 drops a trip outside 2180..4480 dK (-55..175 C) as bogus firmware data: a zone with no
    // valid trip is never polled, so no kernel heartbeat, and `[Firmware Bug]: No valid trip points!` in the
    // guest's log (issue 8: 4732 dK, 200 C, did exactly that on 6.12). The range is the kernel's, not ours.
    expect([TRIP_MIN_DK, TRIP_MAX_DK]).toEqual([2180, 4480]);
    const hots = all.filter((x) => x.t.kind === 'Name' && x.t.name.toString() === '_HOT').map((x) => x.t);
    expect(hots).toHaveLength(2);
    for (const h of hots) {
      const dk = h.kind === 'Name' && h.value.kind === 'Integer' ? Number(h.value.value) : NaN;
      // At least 25 K inside either bound: a kernel that narrows the range a little still takes it.
      expect(dk).toBeGreaterThanOrEqual(TRIP_MIN_DK + 250);
      expect(dk).toBeLessThanOrEqual(TRIP_MAX_DK - 250);
      // The constant _TMP is never near the trip: crossing _HOT would send a netlink event to userspace.
      expect(dk - TMP_DK).toBeGreaterThanOrEqual(500);
    }
    // _TMP itself is a temperature a kernel takes as real (it is range-checked nowhere, but keep it sane).
    expect(TMP_DK).toBeGreaterThanOrEqual(TRIP_MIN_DK);
    expect(TMP_DK).toBeLessThanOrEqual(TRIP_MAX_DK);
  });

  test('only the kernel zone is polled (_TZP), at the configured period', () => {
    const tzp = all.filter((x) => x.t.kind === 'Name' && x.t.name.toString() === '_TZP');
    expect(tzp).toHaveLength(1);
    expect(tzp[0]?.zone).toBe(layout.kernel.zone.split(/[.\\]/).pop());
    const v = tzp[0]?.t;
    expect(v?.kind === 'Name' && v.value.kind === 'Integer' && v.value.value).toBe(BigInt(layout.kernel.periodDs));
  });

  test('no address is computed: the only region is a DataTableRegion over this very table', () => {
    expect(all.filter((x) => x.t.kind === 'OperationRegion')).toEqual([]);
    const dtr = all.filter((x) => x.t.kind === 'DataTableRegion').map((x) => x.t);
    expect(dtr).toHaveLength(1);
    const d = dtr[0];
    if (d?.kind !== 'DataTableRegion') throw new Error('no DataTableRegion');
    const s = (t: AmlTerm) => (t.kind === 'String' ? t.value : undefined);
    expect([s(d.signature), s(d.oemId), s(d.oemTableId)]).toEqual(['SSDT', layout.table.oemId, layout.table.oemTableId]);
  });

  test('bounded, side-effect free AML: no loops, no Notify, no mutex waits', () => {
    const kinds = new Set(all.map((x) => x.t.kind));
    for (const k of ['While', 'Notify', 'Acquire', 'Release', 'Mutex', 'External']) expect(kinds.has(k as AmlTerm['kind'])).toBe(false);
  });

  test('every region write is inside the one Serialized method, and the pad absorbs them', () => {
    const methods = all.filter((x) => x.t.kind === 'Method').map((x) => x.t as Extract<AmlTerm, { kind: 'Method' }>);
    const fieldUnits = new Set(
      all.flatMap((x) => (x.t.kind === 'Field' ? x.t.elements.flatMap((e) => (e.kind === 'named' ? [e.name] : [])) : [])),
    );
    const writers = methods.filter((m) =>
      [...walk(m.body)].some((x) => x.t.kind === 'Store' && x.t.target.kind === 'NameRef' && fieldUnits.has(x.t.target.path.toString())),
    );
    expect(writers.map((m) => m.name.toString())).toEqual(['EDBT']);
    expect(writers[0]?.serialized).toBe(true);
    const stores = [...walk(writers[0]!.body)].filter((x) => x.t.kind === 'Store');
    const last = stores[stores.length - 1]?.t;
    expect(last?.kind === 'Store' && last.target.kind === 'NameRef' && last.target.path.toString()).toBe('PADB');
  });
});
