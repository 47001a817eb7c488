import type { Poll } from '../host-reader/reader.js';
import type { SignalReport } from '../host-reader/region/assess.js';

/** A poll as plain JSON (addresses as hex strings), one object per line in --json mode. */
export function pollJson(p: Poll, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const s = p.snapshot;
  return {
    ...extra,
    vm: p.report.vm,
    table: s ? { address: '0x' + s.address.toString(16), checksumOk: s.checksumOk } : null,
    ...(s?.discovery ? { discovery: { ms: Math.round(s.discovery.ms), reads: s.discovery.reads, scannedBytes: s.discovery.scannedBytes } } : {}),
    region: s
      ? {
          nonce: s.region.nonce,
          loadCount: s.region.loadCount,
          kernelBeats: s.region.kernel.beats,
          agentBeats: s.region.agent.beats,
        }
      : null,
    restarted: p.report.restarted,
    kernel: p.report.kernel,
    agent: p.report.agent,
    ...(p.error ? { error: p.error.message } : {}),
  };
}

const COLORS: Record<string, string> = { alive: '32', late: '33', stalled: '31', paused: '36', restarted: '35' };
function status(s: string, color: boolean): string {
  const padded = s.padEnd(10);
  const c = COLORS[s];
  return color && c ? `\x1b[${c}m${padded}\x1b[0m` : padded;
}

function signalLine(name: string, r: SignalReport, color: boolean): string {
  const parts = [`${name.padEnd(8)}${status(r.status, color)}`];
  if (r.beats !== undefined) parts.push(`beats ${r.beats}`);
  if (r.ageMs !== undefined) parts.push(`age ${(r.ageMs / 1000).toFixed(1)} s`);
  if (r.ratePerSec !== undefined) parts.push(`rate ${r.ratePerSec.toFixed(2)}/s`);
  parts.push(`period ${r.expectedPeriodMs} ms`);
  return parts.join('  ') + (r.detail ? `\n          ${r.detail}` : '');
}

/** A poll as a few human lines. */
export function pollText(p: Poll, opts: { color?: boolean; target?: string } = {}): string {
  const color = opts.color ?? false;
  const s = p.snapshot;
  const k = p.report.kernel;
  const lines = [
    `VM        ${p.report.vm.status ?? (p.report.vm.running ? 'running' : 'not running')}${opts.target ? `  (${opts.target})` : ''}`,
    s
      ? `table     0x${s.address.toString(16)}  checksum ${s.checksumOk ? 'valid' : 'INVALID'}  loads ${s.region.loadCount}` +
        (s.discovery ? `  (found in ${s.discovery.ms.toFixed(0)} ms, ${s.discovery.reads} reads)` : '')
      : `table     not read: ${p.error?.message ?? 'unknown'}`,
    signalLine('kernel', k, color),
  ];
  if ('jitter' in k && k.jitter) {
    const j = k.jitter;
    lines.push(`          ring of ${j.count}: mean ${j.meanMs.toFixed(1)} ms, stddev ${j.stddevMs.toFixed(1)}, min ${j.minMs}, max ${j.maxMs}, p95 ${j.p95Ms}`);
  }
  lines.push(signalLine('agent', p.report.agent, color));
  if (p.report.restarted) lines.push(`restarted ${p.report.restartReason ?? ''}`);
  return lines.join('\n');
}
