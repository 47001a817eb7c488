#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { register as registerSsdtBuild } from './ssdt-build.js';
import { register as registerSsdtInspect } from './ssdt-inspect.js';
import { register as registerQemuArgs } from './qemu-args.js';
import { register as registerRead } from './read.js';
import { register as registerWatch } from './watch.js';
import { register as registerMonitor } from './monitor.js';
import { register as registerDiagnose } from './diagnose.js';
import { register as registerBake } from './bake.js';
import { register as registerController } from './controller.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ExitStatus, UsageError } from './usage-error.js';
import { isMainModule } from '../util/main-module.js';
import { repoRoot } from '../util/repo-root.js';

/** Set by esbuild in the single-file bundle (build/host-bundle.ts), which has no package.json beside it. */
declare const EVE_DIAG_VERSION: string | undefined;

/** The version in the package.json this CLI was installed with (or the bundle was built from). */
function packageVersion(): string {
  if (typeof EVE_DIAG_VERSION === 'string') return EVE_DIAG_VERSION;
  try {
    return (JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

const defaultIo: Io = {
  out: (s) => process.stdout.write(s + '\n'),
  err: (s) => process.stderr.write(s + '\n'),
};

export function program(io: Io): Command {
  const p = new Command('eve-diag')
    .description('Know when an EVE / QEMU application VM hangs, why, and what the guest was doing.')
    .version(packageVersion(), '-V, --version', 'print the eve-diag version')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride();
  const ssdt = p.command('ssdt').description('build and inspect the diagnostic SSDT').exitOverride();
  registerSsdtBuild(ssdt, io.out);
  registerSsdtInspect(ssdt, io.out);
  for (const c of ssdt.commands) c.exitOverride();
  registerQemuArgs(p, io.out);
  registerRead(p, io.out);
  registerWatch(p, io.out);
  registerMonitor(p);
  registerDiagnose(p, io.out, io.err);
  registerBake(p, io.out, io.err);
  registerController(p, io.out);
  for (const c of p.commands) c.exitOverride();
  return p;
}

/** Run the CLI; returns the exit code (0 ok, 1 runtime failure, 2 bad input). */
export async function main(argv: string[], io: Io = defaultIo): Promise<number> {
  try {
    await program(io).parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return EXIT_OK;
      return EXIT_USAGE; // commander already printed the message
    }
    if (e instanceof ExitStatus) return e.code;
    if (e instanceof UsageError) {
      io.err(`eve-diag: ${e.message}`);
      return EXIT_USAGE;
    }
    io.err(`eve-diag: ${(e as Error).message ?? String(e)}`);
    return EXIT_FAILURE;
  }
}

const isEntry = isMainModule(import.meta.url);
if (isEntry) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      console.error(`eve-diag: ${(e as Error)?.stack ?? String(e)}`);
      process.exitCode = 1;
    },
  );
}
