import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../util/repo-root.js';

/** `eve-diag monitor` as a user runs it: the compiled CLI (`npm run build`), its JSON log lines parsed. */
export const CLI = join(repoRoot(), 'dist', 'cli', 'main.js');

export interface LogLine {
  msg: string;
  [k: string]: unknown;
}

export interface MonitorProcess {
  child: ChildProcess;
  lines: LogLine[];
  /** The first log line (already seen or to come) that `pred` accepts, within `ms`. */
  waitFor(pred: (l: LogLine) => boolean, ms: number): Promise<LogLine>;
  exited: Promise<number | null>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** Kills (SIGKILL) every monitor started here that still runs: for afterEach/afterAll. */
export function killMonitors(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

/** `cli`: the script to run (default the compiled CLI; the single-file bundle dist/eve-diag.mjs runs the same way). */
export function startMonitor(config: string, extraArgs: readonly string[] = ['--metrics', '127.0.0.1:0'], cli = CLI): MonitorProcess {
  if (!existsSync(cli)) throw new Error(`${cli} missing: run npm run build first`);
  const child = spawn(process.execPath, [cli, 'monitor', '--config', config, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const lines: LogLine[] = [];
  let buf = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(l) as LogLine);
      } catch {
        lines.push({ msg: `(not JSON) ${l}` });
      }
      for (const w of waiters) w();
    }
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) =>
    child.on('exit', (code) => {
      live.delete(child);
      r(code);
    }),
  );
  const waitFor = (pred: (l: LogLine) => boolean, ms: number) =>
    new Promise<LogLine>((resolve, reject) => {
      const check = () => {
        const hit = lines.find(pred);
        if (hit) {
          waiters.delete(check);
          clearTimeout(t);
          resolve(hit);
        }
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no matching log line in ${ms} ms; stderr: ${stderr}\n${lines.map((l) => JSON.stringify(l)).join('\n')}`));
      }, ms);
      waiters.add(check);
      check();
    });
  return { child, lines, waitFor, exited };
}
