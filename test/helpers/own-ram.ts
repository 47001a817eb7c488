import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

/**
 * A simulated guest's RAM in this very process, readable through /proc/<this pid>/mem as the monitor
 * reads QEMU's: an ArrayBuffer (off the V8 heap: its address does not move) and the host virtual
 * address of its first byte. A fake QEMU that answers HMP `gpa2hva` with an address in it lets the
 * real procmem path run with no QEMU (the unit tests, bench/fleet's simulator).
 */
export interface OwnRam {
  bytes: Uint8Array;
  /** Host virtual address of bytes[0]. */
  hva: bigint;
}

/** Host virtual address of `buf`'s first byte: a random magic written into it, searched for in /proc/self/mem. */
export function findOwnHva(buf: Uint8Array): bigint {
  if (buf.length < 64) throw new RangeError(`buffer: at least 64 bytes (got ${buf.length})`);
  const magic = randomBytes(32);
  buf.set(magic, 0);
  const maps = readFileSync('/proc/self/maps', 'latin1').split('\n');
  const fd = openSync('/proc/self/mem', 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (const line of maps) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) rw-p [0-9a-f]+ 00:00 0\s*(\S*)$/.exec(line);
      if (m === null || (m[3] !== '' && m[3] !== '[heap]')) continue;
      const lo = BigInt(`0x${m[1]}`);
      const hi = BigInt(`0x${m[2]}`);
      if (hi - lo < BigInt(buf.length)) continue;
      for (let at = lo; at < hi; at += BigInt(chunk.length - magic.length)) {
        const n = readSync(fd, chunk, 0, Number(hi - at < BigInt(chunk.length) ? hi - at : BigInt(chunk.length)), Number(at));
        const i = chunk.subarray(0, n).indexOf(magic);
        if (i >= 0) {
          const hva = at + BigInt(i);
          // Check it is this buffer: change the magic, read it back there.
          const again = randomBytes(32);
          buf.set(again, 0);
          const back = Buffer.alloc(32);
          readSync(fd, back, 0, 32, Number(hva));
          if (back.equals(again)) {
            buf.fill(0, 0, 32);
            return hva;
          }
          buf.set(magic, 0);
        }
        if (n < chunk.length) break;
      }
    }
  } finally {
    closeSync(fd);
  }
  throw new Error('own RAM: the buffer was not found in /proc/self/mem');
}

/** `size` bytes of zeroed RAM starting on a page boundary, with its host virtual address. */
export function ownRam(size: number, page = 4096): OwnRam {
  const all = new Uint8Array(new ArrayBuffer(size + page));
  const hva0 = findOwnHva(all);
  all.fill(0, 0, 64);
  const align = Number((BigInt(page) - (hva0 % BigInt(page))) % BigInt(page));
  return { bytes: all.subarray(align, align + size), hva: hva0 + BigInt(align) };
}
