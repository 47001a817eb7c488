import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

/** `npm run demo` end to end (the compiled demo from `npm run build`, as a user runs it). */
const demo = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'demo.js');

describe('npm run demo', () => {
  test('boots the demo VM, panics it, reports stalled, ships the report, the controller finds the panic; --keep serves the dashboard until SIGINT', async () => {
    expect(existsSync(demo), `${demo} missing: run npm run build`).toBe(true);
    const child = spawn(process.execPath, [demo, '--keep'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      let kept: () => void = () => undefined;
      const keeping = new Promise<void>((resolve) => (kept = resolve));
      const onData = (d: Buffer) => {
        out += d.toString();
        if (out.includes('the controller keeps running; Ctrl-C stops it.')) kept();
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      const first = await Promise.race([keeping.then(() => 'kept' as const), exited.then((code) => code)]);
      expect(first, out).toBe('kept');

      // The guest kernel it booted, by the version string inside the bzImage (6.1 on bookworm).
      expect(out).toMatch(/guest kernel \S+: \d+\.\d+\.\S+ \(.*\) #\d/);
      expect(out).toMatch(/kernel alive/);
      expect(out).toMatch(/agent alive/);
      expect(out).toMatch(/console: Kernel panic/);
      expect(out).toMatch(/verdict: guest kernel stopped .* kernel heartbeat stalled/);
      // The monitor's collectors, its spool and shipper; the controller's analyzers.
      expect(out).toMatch(/console-capture +done +console: /);
      expect(out).toMatch(/delivered: 1 of 1 bundle/);
      expect(out).toMatch(/CRITICAL Kernel panic: sysrq triggered crash +\[kernel-log\]/);
      expect(out).toMatch(/Call trace: panic < sysrq_handle_crash < /);
      const pid = Number(/QEMU pid (\d+)/.exec(out)?.[1]);
      expect(pid).toBeGreaterThan(0);
      expect(existsSync(`/proc/${pid}`), 'QEMU still runs under --keep').toBe(false);

      // The dashboard it printed: log in with the admin token, the report page shows the finding.
      const m = /dashboard: (http:\/\/127\.0\.0\.1:\d+)(\/reports\/\d+) +\(log in at \S+ with the admin token (\S+)\)/.exec(out);
      expect(m, out).not.toBeNull();
      const [, base, path, token] = m as unknown as [string, string, string, string];
      const login = await fetch(`${base}/login`, { method: 'POST', body: new URLSearchParams({ token }), redirect: 'manual' });
      expect(login.status).toBe(303);
      const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string;
      const page = await fetch(`${base}${path}`, { headers: { cookie } });
      expect(page.status).toBe(200);
      const html = await page.text();
      expect(html).toContain('Kernel panic: sysrq triggered crash');
      expect(html).toContain('demo-vm');
    } finally {
      child.kill('SIGINT');
    }
    expect(await exited).toBe(130);
    const dir = /bundle \S+ in the spool \((\/\S+?)\/spool\//.exec(out)?.[1];
    expect(dir).toBeDefined();
    expect(existsSync(dir as string), 'the demo removes its temporary directory').toBe(false);
  });
});
