import { expect } from 'vitest';
/**
 * What a guest's kernel log must never show after our table is loaded: the kernel's own words for
 * firmware it does not trust. `ACPI: thermal: [Firmware Bug]: No valid trip points!` is how Linux 6.12
 * said our `_HOT` was out of range (issue 8), and it was missed because only `ACPI Error`/`ACPI
 * Warning` were looked for; `AE_*` status codes come with ACPICA's errors and method failures.
 */
const COMPLAINT = /\[Firmware Bug\]|\[Firmware Warn\]|ACPI (BIOS )?(Error|Warning)|\bAE_[A-Z][A-Z_]+\b|Incorrect checksum/i;

/** The lines of `dmesg` that are firmware complaints (empty when the log is clean). */
export function firmwareComplaints(dmesg: string): string[] {
  return dmesg.split(/\r?\n/).filter((l) => COMPLAINT.test(l));
}

/** Thermal actions a correct table can never cause (fact 3): a shutdown, a hot or critical trip. */
const THERMAL_ACTION = /critical temperature|thermal.*(shutdown|hot|critical)|Thermal.*trip point.*(crossed|reached)/i;

export function thermalActions(dmesg: string): string[] {
  return dmesg.split(/\r?\n/).filter((l) => THERMAL_ACTION.test(l));
}

/** Runs `dmesg` in a live guest and fails on any firmware complaint or thermal action in it. */
export async function expectCleanDmesg(guest: { run(cmd: string, timeoutMs?: number): Promise<string> }): Promise<string> {
  const dmesg = await guest.run('dmesg');
  expect(firmwareComplaints(dmesg), 'firmware complaints in the guest kernel log').toEqual([]);
  expect(thermalActions(dmesg), 'thermal actions in the guest kernel log').toEqual([]);
  return dmesg;
}
