import { spawn } from 'node:child_process';
import type { ClientRequest } from 'node:http';
import { connect } from 'node:net';

/**
 * Checks run from inside the guest before each mark: a command, a TCP connect, an HTTP GET, each with
 * a timeout. Like a kubelet probe, a probe is a function of (target, timeout) that resolves with a
 * result: a dead, slow or refusing target is a failure with a short reason; it never rejects. The
 * reason is one token (`timeout`, `refused`, `exit-1`, `http-503`...) so a mark stays one
 * `key=value` per check: `check.web=ok check.db=fail:timeout`.
 */

export type CheckSpec =
  | { name: string; kind: 'command'; command: string; timeoutMs: number }
  | { name: string; kind: 'tcp'; host: string; port: number; timeoutMs: number }
  | { name: string; kind: 'http'; url: string; timeoutMs: number };

export type CheckOutcome = { ok: true } | { ok: false; reason: string };

export interface CheckResult {
  name: string;
  outcome: CheckOutcome;
}

const fail = (reason: string): CheckOutcome => ({ ok: false, reason });

/** Map a socket/DNS error to a reason token. */
export function reasonOf(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
      return 'dns';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    default:
      return typeof code === 'string' && /^E[A-Z0-9]{1,20}$/.test(code) ? code.toLowerCase() : 'error';
  }
}

/** Connect to host:port; success once connected. */
export function probeTcp(host: string, port: number, timeoutMs: number): Promise<CheckOutcome> {
  return new Promise((resolve) => {
    let settled = false;
    const socket = connect({ host, port });
    const done = (o: CheckOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => done(fail('timeout')), timeoutMs);
    socket.once('connect', () => done({ ok: true }));
    socket.once('error', (e) => done(fail(reasonOf(e))));
  });
}

/**
 * GET the URL; a 2xx or 3xx status is success (the body is not read). node:http and node:https are
 * loaded on first use: an agent without HTTP checks does not carry them (about 2 MB of RSS).
 */
export async function probeHttp(url: string, timeoutMs: number): Promise<CheckOutcome> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return fail('bad-url');
  }
  const { request } = u.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve) => {
    let req: ClientRequest | undefined;
    let settled = false;
    const done = (o: CheckOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req?.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => done(fail('timeout')), timeoutMs);
    try {
      req = request(u, { method: 'GET', headers: { 'user-agent': 'eve-diag-agent', connection: 'close' } }, (res) => {
        const status = res.statusCode ?? 0;
        res.destroy();
        done(status >= 200 && status < 400 ? { ok: true } : fail(`http-${status}`));
      });
      req.once('error', (e) => done(fail(reasonOf(e))));
      req.end();
    } catch {
      done(fail('bad-url'));
    }
  });
}

/**
 * Run `command` with /bin/sh -c; exit status 0 is success. The command runs in its own process group,
 * and the whole group is killed when the check ends, on timeout and after a normal exit alike: a
 * check's background children (`daemon &`) never outlive it, so checks cannot pile up processes.
 */
export function probeCommand(command: string, timeoutMs: number, shell = '/bin/sh'): Promise<CheckOutcome> {
  return new Promise((resolve) => {
    let settled = false;
    // Output is discarded, so nothing buffers.
    const child = spawn(shell, ['-c', command], { stdio: 'ignore', detached: true });
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // ESRCH: the group is already empty (the shell exited and left no children).
      }
    };
    const done = (o: CheckOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      killGroup();
      resolve(o);
    };
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      done(fail('timeout'));
    }, timeoutMs);
    child.once('error', (e) => done(fail(`spawn-${reasonOf(e)}`)));
    child.once('exit', (code, signal) => {
      done(code === 0 ? { ok: true } : fail(signal !== null ? `signal-${signal}` : `exit-${code ?? 'unknown'}`));
    });
  });
}

/** Runs one check. Never rejects: a probe that throws (a bug) is reported as `fail:error`. */
export async function runCheck(spec: CheckSpec): Promise<CheckResult> {
  let outcome: CheckOutcome;
  try {
    switch (spec.kind) {
      case 'command':
        outcome = await probeCommand(spec.command, spec.timeoutMs);
        break;
      case 'tcp':
        outcome = await probeTcp(spec.host, spec.port, spec.timeoutMs);
        break;
      case 'http':
        outcome = await probeHttp(spec.url, spec.timeoutMs);
        break;
    }
  } catch {
    outcome = fail('error');
  }
  return { name: spec.name, outcome };
}

/** Runs every check at once; resolves when the slowest is done (each is bounded by its timeout). */
export function runChecks(specs: readonly CheckSpec[]): Promise<CheckResult[]> {
  return Promise.all(specs.map(runCheck));
}
