import { VERDICTS, type ReportManifest } from '../../protocol/report-manifest.js';
import type { ArtifactRow, FindingRow, FleetRow, ReportFilter, ReportRow } from '../store/store.js';
import { html, jsonScript, page, type Html } from './html.js';

/**
 * The dashboard's pages, rendered on the server from the store (no framework, no client state): the
 * fleet, the report list with its filters, a report (findings first, the heartbeat timeline as a
 * uPlot chart, evidence, artifacts), one artifact's text with a search box. Everything shown that came
 * from a node or a guest goes through html.ts's escaping.
 */

const ago = (iso: string | null | undefined, now: number) => {
  if (iso === null || iso === undefined) return '';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : s < 172_800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
};
const verdictBadge = (v: string) => html`<span class="verdict v-${/^[a-z-]+$/.test(v) ? v : 'unknown'}">${v}</span>`;
const severityBadge = (s: string | null) => (s === null ? html`<span class="sev none">none</span>` : html`<span class="sev sev-${s}">${s}</span>`);
const beat = (b: FleetRow['kernel']) =>
  b === null || b === undefined ? '' : html`${b.status ?? ''}${b.ageMs !== undefined ? html` <span class="muted">(${(b.ageMs / 1000).toFixed(1)} s)</span>` : ''}`;

export function loginPage(error?: string): string {
  return page(
    'Log in',
    html`<h1>eve-diag controller</h1>
<form method="post" action="/login" class="login">
<label>Admin token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Log in</button>
</form>
${error === undefined ? '' : html`<p class="error">${error}</p>`}
<p class="muted">Create one with <code>eve-diag controller token create --admin</code>.</p>`,
    { nav: false },
  );
}

export function fleetPage(rows: readonly FleetRow[], now = Date.now()): string {
  return page(
    'Fleet',
    html`<h1>Fleet</h1>
${
  rows.length === 0
    ? html`<p class="muted">No node has reported a verdict yet.</p>`
    : html`<table class="fleet">
<thead><tr><th>Node</th><th>App</th><th>Verdict</th><th>Since</th><th>Kernel heartbeat</th><th>Agent heartbeat</th><th>Last report</th></tr></thead>
<tbody>
${rows.map(
  (r) => html`<tr>
<td>${r.node}</td><td>${r.app}</td><td>${verdictBadge(r.verdict)}<div class="reason">${r.reason}</div></td>
<td title="${r.since}">${ago(r.since, now)}</td><td>${beat(r.kernel)}</td><td>${beat(r.agent)}</td>
<td>${r.lastReportKey === null ? '' : html`<a href="/reports/${r.lastReportKey}">${ago(r.lastReportAt, now)}</a>`}</td>
</tr>`,
)}
</tbody></table>`
}`,
  );
}

/** The report list; `error` (a bad filter) is shown under the form, which keeps what was typed. */
export function reportsPage(rows: readonly ReportRow[], f: ReportFilter, now = Date.now(), error?: string): string {
  const opt = (v: string) => html`<option value="${v}" ${f.verdict === v ? html`selected` : ''}>${v}</option>`;
  const last = rows[rows.length - 1];
  const qs = (extra: Record<string, string>) =>
    new URLSearchParams(Object.entries({ node: f.node, app: f.app, verdict: f.verdict, since: f.since, until: f.until, ...extra }).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== '')).toString();
  return page(
    'Reports',
    html`<h1>Reports</h1>
<form method="get" action="/reports" class="filters">
<label>Node <input name="node" value="${f.node ?? ''}"></label>
<label>App <input name="app" value="${f.app ?? ''}"></label>
<label>Verdict <select name="verdict"><option value="">any</option>${VERDICTS.map(opt)}</select></label>
<label>Since <input name="since" placeholder="2026-12-01T00:00:00Z" value="${f.since ?? ''}"></label>
<label>Until <input name="until" value="${f.until ?? ''}"></label>
<button type="submit">Filter</button>
</form>
${error === undefined ? '' : html`<p class="error">${error}</p>`}
<table class="reports">
<thead><tr><th>Time</th><th>Node</th><th>App</th><th>Verdict</th><th>Findings</th><th>Reason</th></tr></thead>
<tbody>
${rows.map(
  (r) => html`<tr>
<td><a href="/reports/${r.key}" title="${r.createdAt}">${ago(r.createdAt, now)}</a></td><td>${r.node}</td><td>${r.app}</td><td>${verdictBadge(r.verdict)}</td>
<td>${r.findings} ${severityBadge(r.worstSeverity)}</td><td class="reason">${r.reason}</td>
</tr>`,
)}
</tbody></table>
${rows.length === 0 && error === undefined ? html`<p class="muted">No report matches.</p>` : ''}
${last !== undefined && rows.length >= (f.limit ?? 50) ? html`<p><a href="/reports?${qs({ before: String(last.key) })}">Older</a></p>` : ''}`,
  );
}

/** The timeline's series for the chart: seconds since the epoch; heartbeat ages in seconds. */
function chartData(m: ReportManifest): { t: number[]; kernelAge: (number | null)[]; agentAge: (number | null)[]; kernelBeats: (number | null)[]; statuses: string[] } {
  const out = { t: [] as number[], kernelAge: [] as (number | null)[], agentAge: [] as (number | null)[], kernelBeats: [] as (number | null)[], statuses: [] as string[] };
  for (const s of m.timeline.slice(-2000)) {
    const t = Date.parse(s.at) / 1000;
    const probe = s['probe'];
    if (Number.isNaN(t) || (probe !== 'kernel-heartbeat' && probe !== 'agent-heartbeat')) continue;
    const age = typeof s['ageMs'] === 'number' ? s['ageMs'] / 1000 : null;
    out.t.push(t);
    out.kernelAge.push(probe === 'kernel-heartbeat' ? age : null);
    out.agentAge.push(probe === 'agent-heartbeat' ? age : null);
    out.kernelBeats.push(probe === 'kernel-heartbeat' && typeof s['beats'] === 'number' ? s['beats'] : null);
    out.statuses.push(`${String(probe).replace('-heartbeat', '')} ${String(s['status'] ?? s['outcome'] ?? '')}`);
  }
  return out;
}

export function reportPage(r: ReportRow, m: ReportManifest, findings: readonly FindingRow[], artifacts: readonly ArtifactRow[]): string {
  const evidence = JSON.stringify(m.evidence, null, 2);
  const byStep = new Map<number, ArtifactRow[]>();
  for (const a of artifacts) byStep.set(a.step, [...(byStep.get(a.step) ?? []), a]);
  const data = chartData(m);
  return page(
    `Report ${r.reportId}`,
    html`<h1>${verdictBadge(r.verdict)} ${r.app} <span class="muted">on ${r.node}</span></h1>
<p class="reason">${r.reason}</p>
<p class="muted">Report <code>${r.reportId}</code>, created ${r.createdAt}, received ${r.receivedAt}. <a href="/reports/${r.key}/bundle.tar.gz" download>Download the bundle</a> · <a href="/api/v1/reports/${r.key}">JSON</a></p>
<section id="findings"><h2>Findings</h2>
${
  findings.length === 0
    ? html`<p class="muted">${r.findings === 0 && r.worstSeverity === null ? 'No finding (or the analysis has not run yet).' : ''}</p>`
    : findings.map(
        (f) => html`<article class="finding sev-${f.severity}">
<h3>${severityBadge(f.severity)} ${f.title} <span class="muted">${f.analyzer}</span></h3>
<p>${f.explanation}</p>
${f.evidence.map(
  (e) => html`<div class="evidence">${e.artifact === undefined ? '' : html`<div class="where">${e.artifact}${e.lineStart === undefined ? '' : html`, lines ${e.lineStart}–${e.lineEnd ?? e.lineStart}`}</div>`}${e.excerpt === undefined ? '' : html`<pre>${e.excerpt}</pre>`}</div>`,
)}
</article>`,
      )
}
</section>
<section id="timeline"><h2>Heartbeat timeline</h2>
${data.t.length === 0 ? html`<p class="muted">No heartbeat samples in this report.</p>` : html`<div id="chart"></div>${jsonScript('timeline-data', data)}`}
</section>
<section id="artifacts"><h2>Diagnostics</h2>
<table class="steps"><thead><tr><th>#</th><th>Step</th><th>Status</th><th>Summary</th><th>Artifacts</th></tr></thead><tbody>
${m.steps.map(
  (s) => html`<tr><td>${s.index}</td><td>${s.kind}</td><td>${s.status}</td><td>${s.summary}</td><td>${(byStep.get(s.index) ?? []).map(
    (a) => html`<a href="/reports/${r.key}/view/${encodeURIComponent(a.file)}">${a.name}</a> <span class="muted">${a.bytes} B</span> `,
  )}${s.omitted.map((o) => html`<span class="muted">${o.name} omitted (${o.reason})</span> `)}</td></tr>`,
)}
</tbody></table>
</section>
<section id="evidence"><h2>Evidence</h2><pre>${evidence}</pre></section>`,
    { scripts: ['/assets/uPlot.min.css', '/assets/uPlot.iife.min.js', '/assets/app.js'] },
  );
}

export function artifactPage(r: ReportRow, a: ArtifactRow, text: string, cut: boolean): string {
  const lines = text.split('\n');
  return page(
    `${a.name} · ${r.reportId}`,
    html`<h1>${a.name} <span class="muted">${r.app} on ${r.node}, ${a.kind}</span></h1>
<p><a href="/reports/${r.key}">Back to the report</a> · <a href="/api/v1/reports/${r.key}/files/${encodeURIComponent(a.file)}" download>Raw</a> · ${a.bytes} bytes${cut ? ' (showing the start)' : ''}</p>
<p><input type="search" id="search" placeholder="Search these lines (a word or /regex/)" autofocus> <span id="matches" class="muted"></span></p>
<div class="artifact" id="artifact">${lines.map((l, i) => html`<div class="line" id="L${i + 1}"><a class="n" href="#L${i + 1}">${i + 1}</a><span class="t">${l}</span></div>`)}</div>`,
    { scripts: ['/assets/app.js'] },
  );
}

/** An image artifact (the screendump's PNG), shown from the files API. */
export function imagePage(r: ReportRow, a: ArtifactRow): string {
  const src = `/api/v1/reports/${r.key}/files/${encodeURIComponent(a.file)}`;
  return page(
    `${a.name} · ${r.reportId}`,
    html`<h1>${a.name} <span class="muted">${r.app} on ${r.node}, ${a.kind}</span></h1>
<p><a href="/reports/${r.key}">Back to the report</a> · <a href="${src}" download>Raw</a> · ${a.bytes} bytes</p>
<p><img class="screen" src="${src}" alt="${a.name}: the VM's screen"></p>`,
  );
}

export function notFoundPage(what: string): string {
  return page('Not found', html`<h1>Not found</h1><p>${what}</p>`);
}

export type { Html };
