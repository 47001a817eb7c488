import { isDeepStrictEqual } from 'node:util';
import { describe, expect, test } from 'vitest';
import { ExtOp, Op } from '../../../acpi/aml/index.js';
import { decodeTable, type DecodedTable } from '../../../acpi/decode/decode.js';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { AmlDecodeError } from '../../../acpi/errors.js';
import { buildTable, HEADER_SIZE } from '../../../acpi/table.js';

/**
 * Property: on any input, decodeTable either returns or throws AmlDecodeError (never another
 * error, never hangs), and whatever it returns is a fixed point: encoding it and decoding again
 * gives the same tree. Fixed seeds, so a failure reproduces; the case index is in the message.
 */

/** mulberry32: a tiny seeded PRNG, uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

/** Bytes the decoder branches on, so random bodies get past the first opcode more often. */
const INTERESTING: readonly number[] = [
  ...Object.values(Op),
  ...Object.values(ExtOp),
  ...Array.from('ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789', (c) => c.charCodeAt(0)),
  0x02,
  0x03,
  0x04,
  0x05,
  0x3f,
  0x40,
  0x41,
  0x80,
  0xc0,
];

function randomBody(rng: Rng, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = rng.chance(0.6) ? rng.pick(INTERESTING) : rng.int(256);
  return out;
}

/** Point the header's length field at the end of `bytes` so the body decoder runs. */
function fitLength(bytes: Uint8Array): Uint8Array {
  if (bytes.length >= HEADER_SIZE) new DataView(bytes.buffer, bytes.byteOffset).setUint32(4, bytes.length, true);
  return bytes;
}

interface Tally {
  decoded: number;
  rejected: number;
}

function check(bytes: Uint8Array, label: string, tally: Tally): void {
  let d: DecodedTable;
  try {
    d = decodeTable(bytes);
  } catch (e) {
    // Plain checks, not expect(): this runs 40k times.
    if (!(e instanceof AmlDecodeError)) throw new Error(`${label}: ${String(e)}`, { cause: e });
    if (!(e.offset >= 0 && e.offset <= bytes.length)) throw new Error(`${label}: offset ${e.offset} outside the input`, { cause: e });
    tally.rejected++;
    return;
  }
  tally.decoded++;
  const again = decodeTable(d.block.encode()).block;
  // node's deep equality compares typed arrays natively; expect() only to print the diff.
  if (!isDeepStrictEqual(again, d.block)) expect(again, label).toStrictEqual(d.block);
}

const HEADER = { signature: 'SSDT', revision: 2, oemId: 'FUZZ', oemTableId: 'FUZZ', oemRevision: 1, creatorId: 'EVED', creatorRevision: 1 };

describe('decodeTable on hostile input', () => {
  test('20k random buffers up to 512 bytes', { timeout: 120_000 }, () => {
    const rng = new Rng(0x5eed_0001);
    const tally: Tally = { decoded: 0, rejected: 0 };
    for (let i = 0; i < 20_000; i++) {
      const length = rng.int(513);
      let bytes: Uint8Array;
      if (rng.chance(0.2) || length < HEADER_SIZE) {
        bytes = randomBody(rng, length); // raw: mostly rejected by the header checks
      } else {
        bytes = buildTable(HEADER, randomBody(rng, length - HEADER_SIZE));
        if (rng.chance(0.1)) bytes[9] = rng.int(256); // a wrong checksum is reported, not thrown
      }
      check(bytes, `random case ${i}`, tally);
    }
    expect(tally.rejected).toBeGreaterThan(0);
    expect(tally.decoded).toBeGreaterThan(0);
  });

  test('20k mutations of the diagnostic SSDT', { timeout: 120_000 }, () => {
    const rng = new Rng(0x5eed_0002);
    const tables = [
      buildDiagSsdt({ nonce: 1n }).aml,
      buildDiagSsdt({ nonce: 0x0123_4567_89ab_cdefn, ringLength: 4, kernelPeriodMs: 100 }).aml,
      buildDiagSsdt({ nonce: 2n, ringLength: 64, scope: '\\_SB.PCI0', kernelZone: 'KZ', agentZone: 'AZ' }).aml,
    ];
    const tally: Tally = { decoded: 0, rejected: 0 };
    for (let i = 0; i < 20_000; i++) {
      const src = rng.pick(tables);
      let bytes: Uint8Array = src.slice();
      const rounds = 1 + rng.int(3);
      for (let k = 0; k < rounds; k++) bytes = mutate(rng, bytes, src);
      // Mostly keep the length field consistent so mutations reach the body decoder.
      if (rng.chance(0.8)) fitLength(bytes);
      check(bytes, `mutation case ${i}`, tally);
    }
    expect(tally.rejected).toBeGreaterThan(0);
    expect(tally.decoded).toBeGreaterThan(0);
  });
});

function mutate(rng: Rng, bytes: Uint8Array, src: Uint8Array): Uint8Array {
  const n = bytes.length;
  switch (rng.int(6)) {
    case 0: {
      // Overwrite a few bytes with random or interesting values (in the body, mostly).
      const out = bytes.slice();
      const count = 1 + rng.int(4);
      for (let k = 0; k < count && n > 0; k++) {
        const at = rng.chance(0.9) && n > HEADER_SIZE ? HEADER_SIZE + rng.int(n - HEADER_SIZE) : rng.int(n);
        out[at] = rng.chance(0.5) ? rng.pick(INTERESTING) : rng.int(256);
      }
      return out;
    }
    case 1: {
      // Flip one bit.
      const out = bytes.slice();
      if (n > 0) {
        const at = rng.int(n);
        out[at] = (out[at] as number) ^ (1 << rng.int(8));
      }
      return out;
    }
    case 2:
      // Truncate.
      return bytes.slice(0, rng.int(n + 1));
    case 3: {
      // Delete a range.
      const a = rng.int(n + 1);
      const b = Math.min(n, a + 1 + rng.int(32));
      return concat(bytes.subarray(0, a), bytes.subarray(b));
    }
    case 4: {
      // Splice in a chunk of the original table somewhere else (plausible AML in the wrong place).
      const from = rng.int(src.length);
      const chunk = src.subarray(from, Math.min(src.length, from + 1 + rng.int(64)));
      const at = rng.int(n + 1);
      return concat(bytes.subarray(0, at), chunk, bytes.subarray(at));
    }
    default: {
      // Insert random bytes.
      const at = rng.int(n + 1);
      return concat(bytes.subarray(0, at), randomBody(rng, 1 + rng.int(16)), bytes.subarray(at));
    }
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
