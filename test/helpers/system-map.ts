import { readFile, writeFile } from 'node:fs/promises';
import { SymbolTable } from '../../host-reader/symbols/system-map.js';
import type { Guest } from './guest.js';

/**
 * A System.map for the kernel a test guest runs. Debian's /boot/System.map is a placeholder (the real
 * one is in linux-image-*-dbg, ~1 GB), so the guest writes its /proc/kallsyms text symbols (and
 * linux_banner, _end) onto a raw virtio disk (`disk`, attached as /dev/vda: see `kallsymsDiskArgs`),
 * and they are turned back into link-time addresses, minus the guest's own KASLR offset (runtime
 * `_text` - 0xffffffff81000000): what a System.map holds.
 */

export const LINK_TEXT = 0xffffffff81000000n;

/** QEMU flags for the disk the guest writes its symbols to (the guest needs virtio_blk, virtio_pci). */
export function kallsymsDiskArgs(disk: string): string[] {
  return ['-drive', `file=${disk},format=raw,if=none,id=ks`, '-device', 'virtio-blk-pci,drive=ks'];
}

/** A zeroed 16 MiB disk image for kallsymsDiskArgs. */
export async function makeKallsymsDisk(disk: string): Promise<void> {
  await writeFile(disk, Buffer.alloc(16 * 1024 * 1024));
}

export interface GuestSymbols {
  /** The running kernel's symbols, at their runtime addresses. */
  runtime: SymbolTable;
  /** The guest's KASLR offset. */
  offset: bigint;
  /** Where the System.map (link-time addresses) was written. */
  systemMap: string;
}

/** Dumps the guest's kallsyms through `disk` and writes a System.map to `out`. */
export async function systemMapFromGuest(guest: Guest, disk: string, out: string): Promise<GuestSymbols> {
  await guest.run(
    `echo 0 > /proc/sys/kernel/kptr_restrict; awk 'NF == 3 && ($2 ~ /^[TtWw]$/ || $3 == "linux_banner" || $3 == "_end")' /proc/kallsyms > /dev/vda; sync; echo done`,
    90_000,
  );
  const raw = await readFile(disk, 'latin1');
  const dump = raw.slice(0, raw.indexOf('\0'));
  const runtime = SymbolTable.parse(dump);
  const text = runtime.address('_text');
  if (text === undefined) throw new Error('the guest kallsyms has no _text');
  const offset = text - LINK_TEXT;
  await writeFile(
    out,
    dump
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => `${(BigInt(`0x${l.slice(0, 16)}`) - offset).toString(16).padStart(16, '0')}${l.slice(16)}`)
      .join('\n'),
  );
  return { runtime, offset, systemMap: out };
}
