import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { guestKernel } from '../../build/kernels.js';
import { startController, type TestController } from '../helpers/controller.js';
import { launchGuest, stopAllGuests } from '../helpers/guest.js';
import { killMonitors, startMonitor } from '../helpers/monitor-cli.js';

/**
 * The whole path, each part real: a Debian 6.1 guest with our table panics; `eve-diag monitor` (the
 * compiled CLI, a YAML config with `controller:`) sees the kernel heartbeat stop, runs its diagnostics,
 * and its shipper delivers the bundle and the verdict changes to a controller; the controller's
 * analyzers find the panic with its call trace; an admin sees it on the report page in Chromium.
 */
const CHROMIUM = '/usr/bin/chromium';
let dir: string;
let ctl: TestController | undefined;
let browser: Browser | undefined;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-e2e-'));
});
afterAll(async () => {
  killMonitors();
  await stopAllGuests();
  await browser?.close().catch(() => undefined);
  await ctl?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('panic -> monitor -> controller -> dashboard', () => {
  test('the panic finding with its call trace is on the report page; the fleet shows the verdict', async () => {
    ctl = await startController({ pollMs: 100 });
    const tokenFile = join(dir, 'node.token');
    await writeFile(tokenFile, `${await ctl.nodeToken('edge-e2e')}\n`, { mode: 0o600 });
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 500 });
    await writeFile(join(dir, 't.aml'), aml);
    await writeFile(join(dir, 't.json'), JSON.stringify(layout));
    const guest = await launchGuest({ kernel: await guestKernel('debian-6.1'), acpiTables: [join(dir, 't.aml')], append: 'quiet panic=0 eve_diag.scenario=panic eve_diag.delay=25' });
    const config = join(dir, 'monitor.yaml');
    await writeFile(
      config,
      `spool: { dir: ${join(dir, 'spool')} }
controller: { url: "${ctl.url}", tokenFile: ${tokenFile} }
apps:
  - name: vm1
    transports: { qmp: ${guest.qmpPath}, consoleLog: ${guest.consoleLogPath}, layout: ${join(dir, 't.json')} }
    scenarios:
      - { name: run-state, probe: { type: qmp-status }, periodSeconds: 1, timeoutSeconds: 1 }
      - { name: kernel, probe: { type: kernel-heartbeat }, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 2 }
    diagnostics:
      collectors:
        - { type: console-capture, timeoutSeconds: 5 }
        - { type: hmp-registers, timeoutSeconds: 5 }
`,
    );
    const m = startMonitor(config);
    await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'running-healthy', 90_000);
    await guest.waitForConsole(/Kernel panic/, 90_000);
    await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'guest-kernel-hung', 30_000);
    const delivered = await m.waitFor((l) => l.msg === 'report delivered', 60_000);
    const key = Number(delivered['key']);
    expect(key).toBeGreaterThan(0);

    // The analysis runs in the controller's worker.
    const store = ctl.store;
    let titles: string[] = [];
    for (let i = 0; i < 200 && !titles.some((t) => t.startsWith('Kernel panic')); i++) {
      titles = (await store.findings(key)).map((f) => f.title);
      await new Promise((r) => setTimeout(r, 100));
    }
    const panic = (await store.findings(key)).find((f) => f.title.startsWith('Kernel panic'));
    expect(panic, titles.join('\n')).toBeDefined();
    expect(panic?.explanation).toMatch(/Call trace: panic < /);

    // What the operator sees.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless=new', '--no-sandbox'] });
    const page = await browser.newPage();
    await page.goto(`${ctl.url}/login`);
    await page.fill('input[name=token]', ctl.admin);
    await Promise.all([page.waitForURL(`${ctl.url}/`), page.click('button[type=submit]')]);
    await expect.poll(async () => page.textContent('body'), { timeout: 10_000 }).toMatch(/edge-e2e[\s\S]*vm1[\s\S]*guest-kernel-hung/);
    await page.goto(`${ctl.url}/reports/${key}`);
    const body = (await page.textContent('body')) ?? '';
    expect(body).toContain(panic?.title as string);
    expect(body).toMatch(/Call trace: panic < /);
    const shots = join(tmpdir(), `eve-diag-e2e-shots-${randomBytes(4).toString('hex')}`);
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, 'report.png'), fullPage: true });
    console.log(`[e2e] report ${key}: ${titles.join(' | ')}; screenshot ${join(shots, 'report.png')}`);

    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    await guest.stop();
  });
});
