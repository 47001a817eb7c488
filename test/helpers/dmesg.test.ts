import { describe, expect, it } from 'vitest';
import { firmwareComplaints, thermalActions } from './dmesg.js';

describe('firmwareComplaints', () => {
  it('finds the firmware-bug line Linux 6.12 printed for our out-of-range _HOT, and ACPI errors, warnings, AE_ codes', () => {
    const log = [
      '[    0.412345] ACPI: thermal: Thermal Zone [EDGK] (25 C)',
      '[    0.412400] ACPI: thermal: [Firmware Bug]: No valid trip points!',
      '[    0.5] ACPI BIOS Warning (bug): Incorrect checksum in table [SSDT] - 0x12, should be 0x34 (20230628/tbprint-174)',
      '[    0.6] ACPI Error: Aborting method \\_TZ.EDGK._TMP due to previous error (AE_AML_BUFFER_LIMIT) (20230628/psparse-529)',
      '[    0.7] ACPI Warning: SystemIO range 0x0000000000000600-0x000000000000063F conflicts',
      '[    0.8] x86/cpu: [Firmware Warn]: something',
      '[    0.9] virtio_blk virtio1: [vda] 128 512-byte logical blocks',
    ].join('\n');
    expect(firmwareComplaints(log)).toHaveLength(5);
    expect(firmwareComplaints(log)[0]).toContain('No valid trip points');
  });

  it('passes a clean log', () => {
    expect(firmwareComplaints('[ 0.4] ACPI: thermal: Thermal Zone [EDGA] (25 C)\n[ 0.5] ACPI: Interpreter enabled\n')).toEqual([]);
    // Words that only look alike: a task named AE, "BAE_" inside a word.
    expect(firmwareComplaints('[ 1.0] systemd[1]: Started AE.\n[ 1.1] x: BAE_X\n')).toEqual([]);
  });
});

describe('thermalActions', () => {
  it('finds shutdowns and trip crossings, not zone registration', () => {
    expect(thermalActions('[ 1.0] thermal thermal_zone0: critical temperature reached, shutting down\n')).toHaveLength(1);
    expect(thermalActions('[ 0.4] ACPI: thermal: Thermal Zone [EDGK] (25 C)\n')).toEqual([]);
  });
});
