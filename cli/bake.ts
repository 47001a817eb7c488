import type { Command } from 'commander';
import { register as registerCloudInit } from './bake-cloud-init.js';

/** `eve-diag bake ...`: put the guest agent into VM images. */
export function register(program: Command, out: (s: string) => void): void {
  const bake = program.command('bake').description('put the guest agent into VM images').exitOverride();
  registerCloudInit(bake, out);
  for (const c of bake.commands) c.exitOverride();
}
