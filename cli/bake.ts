import type { Command } from 'commander';
import { register as registerCloudInit } from './bake-cloud-init.js';
import { register as registerImage } from './bake-image.js';

/** `eve-diag bake ...`: put the guest agent into VM images. */
export function register(program: Command, out: (s: string) => void, err: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): void {
  const bake = program.command('bake').description('put the guest agent into VM images').exitOverride();
  registerCloudInit(bake, out);
  registerImage(bake, out, err);
  for (const c of bake.commands) c.exitOverride();
}
