import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

/** `npm run demo` end to end (the compiled demo from `npm run build`, as a user runs it). */
const demo = join(import.meta.dirname, '..', '..', 'dist', 'build', 'demo.js');

describe('npm run demo', () => {
  test('boots the demo VM, sees both heartbeats, panics it, reports stalled, leaves no QEMU behind', async () => {
    expect(existsSync(demo), `${demo} missing: run npm run build`).toBe(true);
    const child = spawn(process.execPath, [demo], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, out).toBe(0);
    // The guest kernel it booted, by the version string inside the bzImage (6.1 on bookworm).
    expect(out).toMatch(/guest kernel \S+: \d+\.\d+\.\S+ \(.*\) #\d/);
    expect(out).toMatch(/kernel alive/);
    expect(out).toMatch(/agent alive/);
    expect(out).toMatch(/console: Kernel panic/);
    expect(out).toMatch(/verdict: guest kernel stopped .* kernel heartbeat stalled/);
    const pid = Number(/QEMU pid (\d+)/.exec(out)?.[1]);
    expect(pid).toBeGreaterThan(0);
    expect(existsSync(`/proc/${pid}`)).toBe(false);
  });
});
