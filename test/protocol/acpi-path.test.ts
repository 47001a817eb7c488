import { describe, expect, it } from 'vitest';
import { buildDiagSsdt, DEFAULTS } from '../../acpi/diag/ssdt.js';
import { DEFAULT_AGENT_ZONE, normalizeAcpiPath } from '../../protocol/acpi-path.js';

describe('normalizeAcpiPath', () => {
  it.each([
    ['\\_TZ_.EDGA', '\\_TZ_.EDGA'],
    ['\\_TZ.EDGA', '\\_TZ_.EDGA'],
    ['\\_tz.edga', '\\_TZ_.EDGA'],
    ['\\_SB.PCI0.A', '\\_SB_.PCI0.A___'],
    [' \\_TZ_.EDGA\n', '\\_TZ_.EDGA'],
  ])('%j -> %j', (input, want) => {
    expect(normalizeAcpiPath(input)).toBe(want);
  });

  it.each(['_TZ_.EDGA', '\\', '\\_TZ_.EDGAX', '\\_TZ_..EDGA', '\\1BAD', '\\_TZ_/EDGA', ''])('rejects %j', (bad) => {
    expect(normalizeAcpiPath(bad)).toBeUndefined();
  });
});

describe('DEFAULT_AGENT_ZONE', () => {
  it('is the agent zone of the table built with the default names, as sysfs prints it', () => {
    const { layout } = buildDiagSsdt({ nonce: 1n });
    expect(normalizeAcpiPath(layout.agent.zone)).toBe(DEFAULT_AGENT_ZONE);
    expect(DEFAULT_AGENT_ZONE).toBe(`\\_TZ_.${DEFAULTS.agentZone}`);
  });
});
