import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { chromium, type Browser, type BrowserContext, type BrowserServer, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Spool } from '../../monitor/report/spool.js';
import type { ReportOffer, VerdictEvent } from '../../protocol/controller-api.js';
import { MANIFEST_FILE, type ReportManifest } from '../../protocol/report-manifest.js';
import type { FindingRow } from '../../controller/store/store.js';
import { startController, type TestController } from '../helpers/controller.js';
import { fixtureBundles } from '../helpers/fixtures.js';

/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core (never a downloaded
 * browser). A controller on port 0 is loaded through the ingest API (manifest, missing artifacts,
 * commit) with the bundles captured from real guests (test/fixtures/bundles) and one hostile report
 * whose node, app and console text carry markup; its worker analyzes them. Then the pages are read as
 * an admin sees them: login, fleet, the report list and its filters, a report (findings first, the
 * timeline chart), an artifact with its search, the bundle download, and markup shown as text.
 * Screenshots go to a fresh directory printed at start.
 */
const CHROMIUM = '/usr/bin/chromium';
const STEP_MS = 60_000;
const XSS_SCRIPT = '<script>window.__xss=1</script>';
const XSS_IMG = '<img src=x onerror=window.__xss=1>';

interface Loaded {
  kernel: string;
  scenario: string;
  node: string;
  manifest: ReportManifest;
  key: number;
  findings: FindingRow[];
}

let c: TestController | undefined;
let server: BrowserServer | undefined;
let browser: Browser | undefined;
let context: BrowserContext | undefined;
let spoolDir: string | undefined;
const shots = join(tmpdir(), `eve-diag-dashboard-shots-${randomBytes(4).toString('hex')}`);
const loaded: Loaded[] = [];
let hostile: Loaded;
/** What the pages said on the console (errors) or threw, with the page's URL. */
const pageErrors: string[] = [];

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const ctl = () => c as TestController;

async function api(method: string, path: string, token: string, body?: Buffer | string, type = 'application/json'): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${ctl().url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': type } : {}) },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : new Uint8Array(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: (text === '' ? {} : JSON.parse(text)) as Record<string, unknown> };
}

/** The three-step upload of the ingest API, and a verdict event so the fleet lists the app. */
async function ingest(node: string, text: string, files: ReadonlyMap<string, Buffer>, event: Omit<VerdictEvent, 'id' | 'app' | 'verdict'>): Promise<number> {
  const token = await ctl().nodeToken(node);
  const manifest = JSON.parse(text) as ReportManifest;
  const offer = await api('POST', '/api/v1/reports', token, text);
  expect(offer.status, JSON.stringify(offer.body)).toBeOneOf([200, 202]);
  for (const h of (offer.body as unknown as ReportOffer).missing) {
    const put = await api('PUT', `/api/v1/reports/${manifest.id}/artifacts/${h}`, token, files.get(h), 'application/octet-stream');
    expect(put.status, JSON.stringify(put.body)).toBe(201);
  }
  const commit = await api('POST', `/api/v1/reports/${manifest.id}/commit`, token);
  expect(commit.status, JSON.stringify(commit.body)).toBe(200);
  const ev: VerdictEvent = { id: `ev-${manifest.id}`, app: manifest.app.name, verdict: manifest.verdict, ...event };
  expect((await api('POST', '/api/v1/events', token, JSON.stringify([ev]))).status).toBe(200);
  return Number(commit.body['key']);
}

/**
 * A captured bundle as files in memory, or the reason it is incomplete: the fixtures may be
 * regenerated while this runs, and a half-written directory is skipped, not failed on.
 */
async function readBundle(dir: string): Promise<{ text: string; files: Map<string, Buffer> } | string> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8');
  } catch {
    return 'no manifest.json';
  }
  let manifest: ReportManifest;
  try {
    manifest = JSON.parse(text) as ReportManifest;
  } catch {
    return 'manifest.json is not JSON (being written?)';
  }
  const files = new Map<string, Buffer>();
  for (const a of manifest.steps.flatMap((s) => s.artifacts)) {
    const data = await readFile(join(dir, a.file)).catch(() => undefined);
    if (data === undefined || sha(data) !== a.sha256) return `${a.file} missing or not matching its hash`;
    files.set(a.sha256, data);
  }
  return { text, files };
}

/** The hostile report: markup in its node and app names, its reason and console, and a heartbeat timeline for the chart. */
async function hostileReport(): Promise<Loaded> {
  spoolDir = mkdtempSync(join(tmpdir(), 'eve-diag-dashboard-spool-'));
  const node = `node ${XSS_IMG}`;
  const app = `app ${XSS_SCRIPT}`;
  const t0 = Date.now() - 60_000;
  const timeline = Array.from({ length: 40 }, (_, i) => {
    const kernel = i % 2 === 0;
    const stalled = i >= 24;
    return { at: new Date(t0 + i * 1000).toISOString(), probe: kernel ? 'kernel-heartbeat' : 'agent-heartbeat', outcome: stalled ? 'failure' : 'success', status: stalled ? 'stalled' : 'ok', beats: kernel ? Math.min(i, 24) : i, ageMs: stalled ? (i - 23) * 1000 : 400 };
  });
  const consoleText = [
    '[    1.000000] Booting the hostile guest',
    `[    2.000000] ${XSS_SCRIPT}`,
    `[    2.100000] ${XSS_IMG}`,
    `[    3.000000] Kernel panic - not syncing: ${XSS_SCRIPT}`,
    '',
  ].join('\n');
  const b = await new Spool({ dir: spoolDir }).write(
    {
      app,
      verdict: 'guest-panicked',
      evidence: { reason: `reason ${XSS_IMG}` },
      timeline,
      steps: [{ kind: 'console-capture', ok: true, summary: `console ${XSS_SCRIPT}`, artifacts: [{ name: 'console.txt', mediaType: 'text/plain', data: consoleText }] }],
    },
    { id: `hostile-${randomBytes(4).toString('hex')}` },
  );
  const files = new Map(b.manifest.steps.flatMap((s) => s.artifacts.map((a) => [a.sha256, readFileSync(join(b.dir, a.file))] as const)));
  const key = await ingest(node, readFileSync(join(b.dir, MANIFEST_FILE), 'utf8'), files, {
    reason: `kernel panicked ${XSS_SCRIPT}`,
    at: new Date().toISOString(),
    kernel: { status: 'stalled', beats: 24, ageMs: 16_000 },
  });
  return { kernel: 'hostile', scenario: 'hostile', node, manifest: b.manifest, key, findings: [] };
}

/** Until the worker has no job left, then every report's findings through the read API. */
async function waitForAnalysis(reports: Loaded[]): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const jobs = (await api('GET', '/api/v1/status', ctl().admin)).body['jobs'] as Record<string, number>;
    if ((jobs['queued'] ?? 0) === 0 && (jobs['running'] ?? 0) === 0 && (jobs['done'] ?? 0) + (jobs['failed'] ?? 0) >= reports.length) {
      expect(jobs['failed'] ?? 0, 'failed analysis jobs').toBe(0);
      break;
    }
    if (Date.now() > deadline) throw new Error(`the analysis did not finish in 30 s: jobs ${JSON.stringify(jobs)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const r of reports) r.findings = (await api('GET', `/api/v1/reports/${r.key}/findings`, ctl().admin)).body['findings'] as FindingRow[];
}

/** A page of the logged-in context whose console errors and uncaught exceptions are recorded. */
async function newPage(ctx: BrowserContext = context as BrowserContext): Promise<Page> {
  const page = await ctx.newPage();
  page.setDefaultTimeout(15_000);
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`${page.url()}: console error: ${m.text()}${m.location().url === '' ? '' : ` (${m.location().url})`}`);
  });
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: uncaught: ${e.message}`));
  return page;
}

async function shot(page: Page, name: string): Promise<void> {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

/**
 * Runs `body` on a fresh page, closes it, and fails on anything the page logged as an error but the
 * `expected` ones (matched whole).
 */
async function onPage(body: (page: Page) => Promise<void>, ctx?: BrowserContext, expected: RegExp[] = []): Promise<void> {
  const before = pageErrors.length;
  const page = await newPage(ctx);
  try {
    await body(page);
    expect(await page.evaluate(() => (window as { __xss?: unknown }).__xss), 'window.__xss').toBeUndefined();
  } finally {
    await page.close();
  }
  expect(pageErrors.slice(before).filter((e) => !expected.some((re) => re.test(e)))).toEqual([]);
}

const panics = () => loaded.filter((r) => r.scenario === 'panic');
const reportUrl = (r: Loaded) => `${ctl().url}/reports/${r.key}`;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: the dashboard tests drive Debian's Chromium; run \`apt-get install chromium\` (npm test's build/setup.ts does)`);
  mkdirSync(shots, { recursive: true });
  console.log(`dashboard screenshots: ${shots}`);
  c = await startController({ limits: { maxReportsPerHour: 1000, maxRequestsPerSecond: 1000 } });
  for (const [kernel, scenario, dir] of await fixtureBundles()) {
    const b = await readBundle(dir);
    if (typeof b === 'string') {
      console.warn(`skipping fixture ${kernel}/${scenario}: ${b}`);
      continue;
    }
    const node = `${kernel}-${scenario}`;
    const manifest = JSON.parse(b.text) as ReportManifest;
    const key = await ingest(node, b.text, b.files, { reason: `captured ${kernel} ${scenario}`, at: manifest.createdAt });
    loaded.push({ kernel, scenario, node, manifest, key, findings: [] });
  }
  expect(panics().length, `a complete panic bundle in ${join('test', 'fixtures', 'bundles')}/<kernel>/panic`).toBeGreaterThan(0);
  hostile = await hostileReport();
  await waitForAnalysis([...loaded, hostile]);
  // A browser server, not launch(): it has the browser's process, to kill should closing hang.
  server = await chromium.launchServer({ executablePath: CHROMIUM, args: ['--headless=new', '--no-sandbox'], timeout: 30_000 });
  browser = await chromium.connect(server.wsEndpoint(), { timeout: 30_000 });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  // The login form's POST, from the context so its cookie jar keeps the session for every page.
  const login = await context.request.post(`${ctl().url}/login`, { form: { token: ctl().admin }, maxRedirects: 0 });
  expect(login.status()).toBe(303);
}, STEP_MS);

afterAll(async () => {
  const close = async () => {
    await browser?.close();
    await server?.close();
  };
  try {
    await Promise.race([close(), new Promise((r) => setTimeout(r, 10_000))]);
  } finally {
    // A browser that did not close in time is killed by its pid.
    const p = server?.process();
    if (p !== undefined && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await c?.close();
    if (spoolDir !== undefined) rmSync(spoolDir, { recursive: true, force: true });
  }
}, STEP_MS);

describe('the dashboard in Chromium', () => {
  test('authentication: pages redirect to the login form; a wrong token is refused; the admin token sets an HttpOnly session cookie', async () => {
    const anon = await (browser as Browser).newContext();
    try {
      await onPage(async (page) => {
        for (const path of ['/', '/reports', `/reports/${hostile.key}`, `/reports/${hostile.key}/bundle.tar.gz`]) {
          const res = await page.request.get(`${ctl().url}${path}`, { maxRedirects: 0 });
          expect(res.status(), path).toBe(303);
          expect(res.headers()['location'], path).toBe('/login');
        }
        await page.goto(`${ctl().url}/`);
        expect(new URL(page.url()).pathname).toBe('/login');
        await page.fill('input[name=token]', 'edt_notarealtokenatallnotarealtoken');
        await page.click('button[type=submit]');
        await expect.poll(() => page.locator('.error').textContent()).toBe('That is not an admin token.');
        // A node token is not an admin token either.
        await page.fill('input[name=token]', await ctl().nodeToken(loaded[0]?.node as string));
        await page.click('button[type=submit]');
        await expect.poll(() => page.locator('.error').textContent()).toBe('That is not an admin token.');
        await shot(page, 'login-refused');
        await page.fill('input[name=token]', ctl().admin);
        await Promise.all([page.waitForURL(`${ctl().url}/`), page.click('button[type=submit]')]);
        expect(await page.locator('h1').textContent()).toBe('Fleet');
        const cookie = (await anon.cookies()).find((k) => k.name === 'eve_diag_admin');
        expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
        expect(await page.evaluate(() => document.cookie)).toBe('');
        await Promise.all([page.waitForURL(`${ctl().url}/login`), page.click('nav button')]);
        expect((await anon.cookies()).find((k) => k.name === 'eve_diag_admin')).toBeUndefined();
      }, anon, [
        // A refused login answers 401 with the form again; Chromium logs any 4xx document as a failed load.
        /^http:\/\/127\.0\.0\.1:\d+\/login: console error: Failed to load resource: the server responded with a status of 401 \(Unauthorized\) \(http:\/\/127\.0\.0\.1:\d+\/login\)$/,
      ]);
    } finally {
      await anon.close();
    }
  }, STEP_MS);

  test('the fleet lists every node and app with its current verdict and a link to its last report', async () => {
    await onPage(async (page) => {
      await page.goto(`${ctl().url}/`);
      const rows = await page.locator('table.fleet tbody tr').evaluateAll((trs) =>
        trs.map((tr) => ({ cells: [...(tr as HTMLTableRowElement).cells].map((td) => td.innerText), verdict: tr.querySelector('.verdict')?.textContent, link: tr.querySelector('a')?.getAttribute('href') })),
      );
      expect(rows.length).toBe(loaded.length + 1);
      for (const r of [...loaded, hostile]) {
        const row = rows.filter((x) => x.cells[0] === r.node);
        expect(row.length, r.node).toBe(1);
        expect(row[0]).toMatchObject({ verdict: r.manifest.verdict, link: `/reports/${r.key}` });
        expect(row[0]?.cells[1]).toBe(r.manifest.app.name);
      }
      await shot(page, 'fleet');
    });
  }, STEP_MS);

  test('the report list filters by verdict and by node, through its form', async () => {
    await onPage(async (page) => {
      await page.goto(`${ctl().url}/reports`);
      const rows = page.locator('table.reports tbody tr');
      expect(await rows.count()).toBe(loaded.length + 1);
      // By verdict: the form's select, submitted; the URL carries the filter and the select keeps it.
      await page.selectOption('select[name=verdict]', 'guest-panicked');
      await Promise.all([page.waitForURL(/verdict=guest-panicked/), page.click('form.filters button')]);
      const panicked = [...loaded, hostile].filter((r) => r.manifest.verdict === 'guest-panicked');
      expect(await rows.count()).toBe(panicked.length);
      expect(new Set(await rows.locator('.verdict').allTextContents())).toEqual(new Set(['guest-panicked']));
      expect(await page.locator('select[name=verdict]').inputValue()).toBe('guest-panicked');
      await shot(page, 'reports-guest-panicked');
      // By node, and no verdict.
      const one = panics()[0] as Loaded;
      await page.selectOption('select[name=verdict]', '');
      await page.fill('input[name=node]', one.node);
      await Promise.all([page.waitForURL(new RegExp(`node=${encodeURIComponent(one.node)}`)), page.click('form.filters button')]);
      expect(await rows.count()).toBe(1);
      expect(await rows.locator('td:nth-child(2)').textContent()).toBe(one.node);
      expect(await rows.locator('a').getAttribute('href')).toBe(`/reports/${one.key}`);
      // Both at once, matching nothing.
      await page.goto(`${ctl().url}/reports?node=${encodeURIComponent(one.node)}&verdict=running-healthy`);
      expect(await rows.count()).toBe(0);
      expect(await page.locator('main').textContent()).toContain('No report matches.');
    });
  }, STEP_MS);

  test('a bad filter, an unknown report or file: a page saying what is wrong, the form kept as typed', async () => {
    const failedLoad = (status: string) => new RegExp(`^http://127\\.0\\.0\\.1:\\d+/\\S*: console error: Failed to load resource: the server responded with a status of ${status} \\S*`);
    await onPage(
      async (page) => {
        await page.goto(`${ctl().url}/reports`);
        await page.fill('input[name=since]', 'yesterday');
        await page.fill('input[name=node]', hostile.node);
        const [res] = await Promise.all([page.waitForResponse((r) => r.url().includes('since=yesterday')), page.click('form.filters button')]);
        expect(res.status()).toBe(400);
        expect(res.headers()['content-type']).toBe('text/html; charset=utf-8');
        expect(await page.locator('main .error').textContent()).toMatch(/^since: an ISO 8601 time/);
        expect(await page.locator('input[name=since]').inputValue()).toBe('yesterday');
        expect(await page.locator('input[name=node]').inputValue()).toBe(hostile.node);
        await shot(page, 'reports-bad-filter');
        for (const path of [`/reports/999999`, `/reports/999999/view/00-console.txt`, `/reports/${hostile.key}/view/no-such-file.txt`]) {
          const r = await page.goto(`${ctl().url}${path}`);
          expect(r?.status(), path).toBe(404);
          expect(r?.headers()['content-type'], path).toBe('text/html; charset=utf-8');
          expect(await page.locator('h1').textContent(), path).toBe('Not found');
        }
      },
      undefined,
      [failedLoad('400 \\(Bad Request\\)'), failedLoad('404 \\(Not Found\\)')],
    );
  }, STEP_MS);

  test('every captured report: its findings come before the diagnostics; a panic shows its title and call trace', async () => {
    for (const r of loaded) {
      await onPage(async (page) => {
        await page.goto(reportUrl(r));
        const findings = page.locator('#findings');
        const artifacts = page.locator('#artifacts');
        const position = await findings.evaluate((f, a) => f.compareDocumentPosition(a as Node), await artifacts.elementHandle());
        expect(position & 4 /* Node.DOCUMENT_POSITION_FOLLOWING */, `${r.node}: findings before artifacts`).toBe(4);
        const yF = (await findings.boundingBox())?.y ?? Infinity;
        const yA = (await artifacts.boundingBox())?.y ?? -Infinity;
        expect(yF).toBeLessThan(yA);
        const titles = await findings.locator('article.finding h3').allTextContents();
        expect(titles.length, `${r.node}: findings`).toBe(r.findings.length);
        r.findings.forEach((f, i) => expect(titles[i]).toContain(f.title));
        // Every artifact of the manifest has its link in the diagnostics table.
        for (const a of r.manifest.steps.flatMap((s) => s.artifacts)) expect(await artifacts.locator(`a[href="/reports/${r.key}/view/${a.file}"]`).count(), a.file).toBe(1);
        if (r.scenario === 'panic') {
          const panic = r.findings.find((f) => /panic/i.test(f.title));
          expect(panic, `${r.node}: a panic finding`).toBeDefined();
          const article = findings.locator('article.finding', { hasText: (panic as FindingRow).title });
          await expect.poll(() => article.isVisible()).toBe(true);
          const trace = (await article.locator('.evidence pre').allInnerTexts()).join('\n');
          expect(trace).toContain('Call Trace:');
          const excerpt = (panic as FindingRow).evidence.find((e) => e.excerpt?.includes('Call Trace') === true)?.excerpt;
          expect(excerpt, 'the panic finding has its call trace').toBeDefined();
          // The excerpt as the analyzer wrote it, every line of it (a pre keeps the kernel's indentation).
          expect(trace).toContain(excerpt as string);
          await shot(page, `report-${r.node}`);
        }
        // No timeline in a captured bundle: the page says so instead of an empty chart.
        if (r.manifest.timeline.length === 0) expect(await page.locator('#timeline').textContent()).toContain('No heartbeat samples');
      });
    }
  }, STEP_MS);

  test('the heartbeat timeline is drawn by uPlot on a canvas', async () => {
    await onPage(async (page) => {
      await page.goto(reportUrl(hostile));
      const canvas = page.locator('#chart .uplot canvas');
      await expect.poll(() => canvas.count()).toBe(1);
      const box = await canvas.boundingBox();
      expect(box?.width).toBeGreaterThan(300);
      expect(box?.height).toBeGreaterThan(100);
      expect(await page.locator('#chart .u-legend').textContent()).toContain('kernel heartbeat age (s)');
      // Something was painted: the canvas is not blank.
      const painted = await canvas.evaluate((el) => {
        const cv = el as HTMLCanvasElement;
        const px = (cv.getContext('2d') as CanvasRenderingContext2D).getImageData(0, 0, cv.width, cv.height).data;
        let n = 0;
        for (let i = 3; i < px.length; i += 4) if ((px[i] as number) > 0) n++;
        return n;
      });
      expect(painted).toBeGreaterThan(1000);
      await shot(page, 'report-hostile-timeline');
    });
  }, STEP_MS);

  test('an artifact opens as text; its search finds a word and a /regex/, and hides the other lines', async () => {
    const r = panics()[0] as Loaded;
    const consoleFile = r.manifest.steps.flatMap((s) => s.artifacts).find((a) => a.name === 'console.txt');
    expect(consoleFile, 'the panic bundle has a console.txt').toBeDefined();
    await onPage(async (page) => {
      await page.goto(reportUrl(r));
      await Promise.all([page.waitForURL(/\/view\//), page.click(`#artifacts a:text-is("console.txt")`)]);
      const lines = page.locator('#artifact .line');
      const total = await lines.count();
      expect(total).toBeGreaterThan(10);
      expect(await page.locator('#artifact').innerText()).toContain('Kernel panic - not syncing');
      const texts = await lines.locator('.t').allTextContents();
      const hits = page.locator('#artifact .line.hit');
      // The search runs a moment after the last keystroke: wait for its hits, then its count.
      const search = async (q: string, match: (t: string) => boolean) => {
        const want = texts.filter(match);
        expect(want.length, `lines matching ${q}`).toBeGreaterThan(0);
        await page.fill('#search', q);
        await expect.poll(() => hits.locator('.t').allTextContents()).toEqual(want);
        expect(await page.locator('#matches').textContent()).toBe(`${want.length} matching line${want.length === 1 ? '' : 's'}`);
        return want.length;
      };
      const n = await search('SYSRQ_handle_crash', (t) => t.includes('sysrq_handle_crash'));
      // Only the hits stay visible, highlighted.
      expect(await page.locator('#artifact .line:visible').count()).toBe(n);
      expect(await hits.first().locator('.t').evaluate((el) => getComputedStyle(el).backgroundColor)).not.toBe('rgba(0, 0, 0, 0)');
      await shot(page, 'artifact-search');
      await search('/call trace:$/', (t) => /call trace:$/i.test(t));
      await page.fill('#search', '');
      await expect.poll(() => page.locator('#artifact .line:visible').count()).toBe(total);
      // The raw file is text, never something a browser would run.
      const raw = await page.request.get(`${ctl().url}/api/v1/reports/${r.key}/files/${(consoleFile as { file: string }).file}`);
      expect(raw.headers()['content-type']).toBe('text/plain; charset=utf-8');
    });
  }, STEP_MS);

  test('the bundle downloads as a gzip tar holding the manifest and every artifact', async () => {
    const r = panics()[0] as Loaded;
    await onPage(async (page) => {
      await page.goto(reportUrl(r));
      const link = page.locator('a', { hasText: 'Download the bundle' });
      const href = await link.getAttribute('href');
      expect(href).toBe(`/reports/${r.key}/bundle.tar.gz`);
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      expect(download.suggestedFilename()).toBe(`${r.manifest.id}.tar.gz`);
      // Connected to a browser server, the download is read through its stream (path() is local only).
      const chunks: Buffer[] = [];
      for await (const chunk of await download.createReadStream()) chunks.push(chunk as Buffer);
      const file = Buffer.concat(chunks);
      expect([...file.subarray(0, 2)]).toEqual([0x1f, 0x8b]); // gzip magic (RFC 1952 §2.3.1)
      const tar = gunzipSync(file);
      expect(tar.subarray(257, 262).toString('latin1')).toBe('ustar'); // POSIX tar header magic
      const names = tarNames(tar);
      expect(names).toEqual([`${r.manifest.id}/${MANIFEST_FILE}`, ...r.manifest.steps.flatMap((s) => s.artifacts.map((a) => `${r.manifest.id}/${a.file}`))]);
      const res = await page.request.get(`${ctl().url}${href as string}`);
      expect(res.status()).toBe(200);
      expect(res.headers()['content-type']).toBe('application/gzip');
    });
  }, STEP_MS);

  test('markup from a node or a guest is shown as text on every page, never run', async () => {
    const pages: [string, string, string[]][] = [
      ['fleet', '/', [hostile.node, hostile.manifest.app.name, `kernel panicked ${XSS_SCRIPT}`]],
      ['reports', '/reports', [hostile.node, hostile.manifest.app.name]],
      // The analyzers read the hostile console too: their findings quote it.
      ['report', `/reports/${hostile.key}`, [hostile.node, hostile.manifest.app.name, `console ${XSS_SCRIPT}`, ...hostile.findings.flatMap((f) => [f.title, ...f.evidence.flatMap((e) => e.excerpt ?? [])])]],
      ['artifact', `/reports/${hostile.key}/view/${hostile.manifest.steps[0]?.artifacts[0]?.file ?? ''}`, [XSS_SCRIPT, XSS_IMG]],
    ];
    for (const [name, path, texts] of pages) {
      await onPage(async (page) => {
        const requests: string[] = [];
        page.on('request', (q) => requests.push(q.url()));
        await page.goto(`${ctl().url}${path}`);
        const text = await page.locator('main').innerText();
        for (const t of texts) expect(text, `${name}: ${t}`).toContain(t);
        // Our scripts only: the assets and the JSON data block.
        const scripts = await page.locator('script').evaluateAll((els) => els.map((e) => (e as HTMLScriptElement).src || (e as HTMLScriptElement).type));
        for (const s of scripts) expect(s, name).toMatch(/\/assets\/[\w.]+\.js$|^application\/json$/);
        expect(await page.locator('main img').count(), name).toBe(0);
        expect(requests.filter((u) => new URL(u).pathname === '/x'), name).toEqual([]);
        if (name === 'artifact') {
          await page.fill('#search', '__xss');
          await expect.poll(() => page.locator('#matches').textContent()).toBe('3 matching lines');
        }
        await shot(page, `hostile-${name}`);
      });
    }
    expect(hostile.findings.flatMap((f) => f.evidence.map((e) => e.excerpt ?? '')).join('\n'), 'a finding quotes the hostile console').toContain(XSS_SCRIPT);
  }, STEP_MS);
});

/** The entry names of a tar archive (512-byte headers; name at 0, size in octal at 124: POSIX ustar). */
function tarNames(tar: Buffer): string[] {
  const names: string[] = [];
  for (let off = 0; off + 512 <= tar.length; ) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    names.push(header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, ''));
    const size = parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}
