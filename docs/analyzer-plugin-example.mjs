// An example custom analyzer for the eve-diag controller (see controller/analyzers/plugins.ts and the
// README's "Custom analyzers"). Put a file like this in the directory given to
// `eve-diag controller serve --plugins DIR`: every stored report runs through it in a worker thread of
// its own, with a time and a memory limit.
//
// analyze(report, context) gets the report as plain data, and context = { name } (plugin:<file name>):
//   report = { node, app, manifest, artifacts: [{ file, name, kind, mediaType, text }], logs? }
// and returns (or resolves with) findings:
//   [{ severity: 'critical'|'error'|'warning'|'info', title, explanation, evidence: [{ artifact, lineStart, lineEnd, excerpt }] }]
//
// This one looks for user-space crashes in the guest's console (the kernel's "segfault at" and
// "traps:" lines): a service that keeps crashing often comes before the hang an operator sees.

const CRASH = /\b([\w.-]{1,64})\[(\d+)\]: segfault at ([0-9a-f]+)|traps: ([\w.-]{1,64})\[(\d+)\] (general protection|trap [\w ]+)/;

export function analyze(report) {
  const findings = [];
  for (const a of report.artifacts) {
    if (a.kind !== 'console-capture' && a.kind !== 'erst-log') continue;
    const crashes = [];
    a.text.split('\n').forEach((line, i) => {
      const m = CRASH.exec(line);
      if (m !== null) crashes.push({ process: m[1] ?? m[4], pid: Number(m[2] ?? m[5]), line: i + 1, text: line.trim() });
    });
    if (crashes.length === 0) continue;
    const names = [...new Set(crashes.map((c) => c.process))];
    findings.push({
      severity: 'warning',
      title: `${crashes.length} user-space crash${crashes.length === 1 ? '' : 'es'} in the guest: ${names.slice(0, 5).join(', ')}`,
      explanation: `The guest kernel logged ${crashes.length} crash${crashes.length === 1 ? '' : 'es'} of user processes before the report was taken.`,
      evidence: crashes.slice(0, 5).map((c) => ({ artifact: a.file, lineStart: c.line, lineEnd: c.line, excerpt: c.text })),
    });
  }
  return findings;
}
