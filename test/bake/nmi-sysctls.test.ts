import { beforeAll, describe, expect, test } from 'vitest';
import { parse } from 'yaml';
import { INSTALL_PATHS, nmiSysctlPairs, readInstallAssets, withNmiSysctls, type InstallAssets } from '../../bake/assets.js';
import { cloudInitUserData, type CloudInitOptions } from '../../bake/cloud-init.js';
import { planImageInstall, type ImageFacts } from '../../bake/image.js';

/** bake sets the NMI sysctls (what the guest does with the host's `nmi` collector) only when asked. */

let assets: InstallAssets;
beforeAll(async () => {
  assets = await readInstallAssets();
});

const facts: ImageFacts = { etc: true, sbinInit: 'missing', systemd: true, openrc: false, initD: false, rcDirs: false, cronD: true, crontabs: false, node: true };
const cloud = (o: Partial<CloudInitOptions> = {}) =>
  parse(
    cloudInitUserData({
      mode: 'sh',
      assets,
      periodS: 1,
      markPeriodS: 60,
      zone: '\\_TZ_.EDGA',
      console: '/dev/console',
      responder: null,
      nodePath: '/usr/bin/node',
      installNode: false,
      encoding: 'text',
      ...o,
    }),
  ) as { write_files: Array<{ path: string; content: string }>; runcmd: string[][] };

describe('NMI sysctls', () => {
  test('pairs in a fixed order; false writes 0; unknown or non-boolean settings throw', () => {
    expect(nmiSysctlPairs(undefined)).toEqual([]);
    expect(nmiSysctlPairs({ nmiWatchdog: false, unknownNmiPanic: true, panicOnIoNmi: true, panicOnUnrecoveredNmi: true })).toEqual([
      ['kernel.unknown_nmi_panic', '1'],
      ['kernel.panic_on_unrecovered_nmi', '1'],
      ['kernel.panic_on_io_nmi', '1'],
      ['kernel.nmi_watchdog', '0'],
    ]);
    expect(() => nmiSysctlPairs({ unknownNmiPanic: 1 as never })).toThrow(TypeError);
    expect(() => nmiSysctlPairs({ panicOnNmi: true } as never)).toThrow(/unknown setting "panicOnNmi"/);
  });

  test('the drop-in: unchanged when none is asked, else the lines appended after a comment', () => {
    expect(withNmiSysctls(assets.sysctl, {})).toBe(assets.sysctl);
    const text = withNmiSysctls(assets.sysctl, { unknownNmiPanic: true });
    expect(text.startsWith(assets.sysctl)).toBe(true);
    expect(text.slice(assets.sysctl.length)).toMatch(/^(\n)?# eve-diag: what this kernel does with an NMI[^\n]*\nkernel\.unknown_nmi_panic = 1\n$/);
    expect(withNmiSysctls('kernel.sysrq = 1', { panicOnIoNmi: false })).toBe('kernel.sysrq = 1\n# eve-diag: what this kernel does with an NMI from the host (eve-diag nmi collector, QMP inject-nmi).\nkernel.panic_on_io_nmi = 0\n');
  });

  test('cloud-init: the drop-in and a sysctl -w at first boot; nothing extra by default', () => {
    const plain = cloud();
    expect(plain.runcmd.filter((c) => c[0] === 'sysctl')).toEqual([['sysctl', '-w', 'kernel.sysrq=1']]);
    expect(plain.write_files.find((f) => f.path === INSTALL_PATHS.sysctl)?.content).toBe(assets.sysctl);

    const nmi = cloud({ nmiSysctls: { unknownNmiPanic: true, nmiWatchdog: true } });
    expect(nmi.runcmd.filter((c) => c[0] === 'sysctl')).toEqual([
      ['sysctl', '-w', 'kernel.sysrq=1'],
      ['sysctl', '-w', 'kernel.unknown_nmi_panic=1'],
      ['sysctl', '-w', 'kernel.nmi_watchdog=1'],
    ]);
    const dropIn = nmi.write_files.find((f) => f.path === INSTALL_PATHS.sysctl)?.content ?? '';
    expect(dropIn).toContain('kernel.sysrq = 1');
    expect(dropIn).toContain('kernel.unknown_nmi_panic = 1\nkernel.nmi_watchdog = 1\n');
  });

  test('bake image: the drop-in written into the image carries them', () => {
    const ops = planImageInstall({ mode: 'sh', init: 'systemd', assets, periodS: 1, markPeriodS: 60, nodePath: '/usr/bin/node', facts, nmiSysctls: { unknownNmiPanic: true } }).ops;
    const dropIn = ops.find((o) => o.op === 'file' && o.path === INSTALL_PATHS.sysctl);
    expect(dropIn?.op === 'file' ? dropIn.content : '').toContain('kernel.unknown_nmi_panic = 1');
    const plain = planImageInstall({ mode: 'sh', init: 'systemd', assets, periodS: 1, markPeriodS: 60, nodePath: '/usr/bin/node', facts }).ops;
    const p = plain.find((o) => o.op === 'file' && o.path === INSTALL_PATHS.sysctl);
    expect(p?.op === 'file' ? p.content : '').toBe(assets.sysctl);
  });
});
