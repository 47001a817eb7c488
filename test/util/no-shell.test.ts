import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { shellArgs } from '../../host-reader/qemu-args/argv.js';
import { repoRoot } from '../../util/repo-root.js';

/**
 * No shell is ever given a string built from config or guest data (issue 13 §4): every child process
 * of the product is spawned with an argv array (spawn, execFile), never through `exec`/`execSync`
 * or `shell: true`, and the only `sh -c` is the guest agent's `command` check, which runs the
 * command its own config names, inside the guest, as documented. (Guestfish, a shell-like language
 * of its own, gets quoted arguments: test/bake/image.guest.test.ts feeds it hostile paths.)
 */

const ROOT = repoRoot();
const PRODUCT = ['acpi', 'bake', 'build', 'cli', 'controller', 'guest-agent', 'host-reader', 'monitor', 'protocol', 'util'];
/** Files allowed to run `sh -c`, and why. */
const SHELL_ALLOWED: Record<string, string> = {
  'guest-agent/checks.ts': "the agent's `command` check: a command line the guest's own agent.json names, run in the guest",
};

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.isFile() && p.endsWith('.ts') && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const files = PRODUCT.flatMap((d) => sources(join(ROOT, d))).map((p) => ({ path: relative(ROOT, p), text: readFileSync(p, 'utf8') }));

describe('no shell', () => {
  test('the scan sees the product: the files that spawn processes are among those read', () => {
    const spawning = files.filter((f) => /from 'node:child_process'/.test(f.text)).map((f) => f.path);
    expect(spawning).toEqual(expect.arrayContaining(['bake/image.ts', 'controller/analyzers/plugins.ts', 'guest-agent/checks.ts']));
  });

  test('child_process is used only through spawn and execFile (argv arrays), never exec, execSync or shell: true', () => {
    const bad: string[] = [];
    for (const f of files) {
      for (const m of f.text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'node:child_process'/g)) {
        const names = (m[1] as string).split(',').map((n) => n.trim().replace(/^type\s+/, '').split(/\s+as\s+/)[0]).filter((n) => n !== '');
        for (const n of names) if (!['spawn', 'execFile', 'spawnSync', 'execFileSync', 'ChildProcess', 'SpawnOptions'].includes(n as string)) bad.push(`${f.path}: imports ${n}`);
      }
      if (/import\s+\*\s+as\s+\w+\s+from\s+'node:child_process'|require\('(node:)?child_process'\)/.test(f.text)) bad.push(`${f.path}: the whole child_process module`);
      if (/[{,]\s*shell\s*:\s*(true|['"`])/.test(f.text)) bad.push(`${f.path}: a shell option`);
    }
    expect(bad).toEqual([]);
  });

  test("`-c` after a shell is only where it is allowed", () => {
    const found = files.filter((f) => /spawn\(\s*(shell|'(\/bin\/)?(ba|da)?sh'|"(\/bin\/)?(ba|da)?sh")\s*,\s*\[\s*'-c'/.test(f.text)).map((f) => f.path);
    expect(found.sort()).toEqual(Object.keys(SHELL_ALLOWED).sort());
    // And nothing else hands a shell a script string.
    const others = files.filter((f) => !(f.path in SHELL_ALLOWED) && /\[\s*'-c'\s*,\s*`/.test(f.text)).map((f) => f.path);
    expect(others).toEqual([]);
  });

  test('`qemu-args --format argv` output, pasted into a real /bin/sh, is exactly the argv: nothing expanded, split or run', () => {
    // Words of any bytes but NUL (which no argv can hold): quotes, $(...), backticks, globs, newlines.
    const word = fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom('$(touch /tmp/eve-diag-pwned)', '`id`', '*', '~', "it's", '"', '\\', '\n', '$HOME', '; rm -rf /', '!!')).map((w) => w.replace(/\0/g, ''));
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 8 }), (argv) => {
        const out = execFileSync('/bin/sh', ['-c', `set -- ${shellArgs(argv)}; printf '%s\\0' "$@"`], { encoding: 'utf8' });
        expect(out.split('\0').slice(0, -1)).toEqual(argv);
      }),
      { numRuns: 60, seed: 20261203 },
    );
  });
});
