import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { decodeCperRecord, decodeErst, ErstDecodeError, readErst } from '../../host-reader/erst/index.js';
import { inflateBody, parseDumpLine } from '../../host-reader/erst/pstore.js';
import { GdbClient, GdbError, parseStopReply } from '../../host-reader/gdb/client.js';
import { encodePacket, PacketDecoder } from '../../host-reader/gdb/packet.js';
import { walkStackWindow } from '../../host-reader/gdb/stack.js';
import { decodeRegisters } from '../../host-reader/gdb/x86-64.js';
import { RUNS, params, SLOW_MS, timed } from './budget.js';

/**
 * The decoders of what a hostile guest controls through the gdbstub (every reply QEMU relays: memory,
 * registers, thread lists) and through ERST (the records the guest's kernel wrote), fuzzed like
 * decoders.test.ts (issue 13 §1): a value or the module's own error, quickly, bounded by the input.
 * FUZZ_RUNS / FUZZ_SEED as there.
 */


/** Bytes a stub might send: RSP's special characters often, so the framing is exercised. */
const rspBytes = fc.array(fc.oneof(fc.constantFrom(0x24, 0x23, 0x7d, 0x2a, 0x2b, 0x2d, 0x25, 0x30, 0x7e, 0x20), fc.integer({ min: 0, max: 255 })), { maxLength: 600 }).map((a) => Uint8Array.from(a));

describe('GDB RSP replies', () => {
  test('PacketDecoder: any bytes, any chunking: items whose payloads stay under the limit', () => {
    fc.assert(
      fc.property(rspBytes, fc.array(fc.nat(700), { maxLength: 4 }), fc.constantFrom(8, 64, 4096), (bytes, cuts, max) => {
        const d = new PacketDecoder(max);
        let at = 0;
        timed(() => {
          for (const c of [...cuts, bytes.length].sort((a, b) => a - b)) {
            for (const i of d.push(bytes.subarray(at, Math.max(at, c)))) if (i.kind === 'packet' || i.kind === 'notification') expect(i.payload.length).toBeLessThanOrEqual(max);
            at = Math.max(at, c);
          }
        });
      }),
      params,
    );
  });

  test('a run-length bomb in one packet stays at the limit, and the packet after it decodes', () => {
    const bomb = Buffer.from(`$0${'*~'.repeat(200_000)}#00`);
    const items = timed(() => new PacketDecoder(4096).push(Buffer.concat([bomb, encodePacket('OK')])));
    expect(items.map((i) => i.kind)).toEqual(['too-long', 'packet']);
  });

  test('parseStopReply, decodeRegisters, walkStackWindow: a value, undefined or a RangeError', () => {
    const isText = (a: bigint) => a >= 0xffffffff81000000n && a < 0xffffffff82000000n;
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), fc.uint8Array({ maxLength: 700 }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: -5, max: 5000 }), (text, bytes, base, rbp, maxFrames) => {
        const stop = parseStopReply(text);
        if (stop !== undefined) expect(stop.signal).toBeLessThanOrEqual(255);
        try {
          decodeRegisters(Buffer.from(bytes));
        } catch (e) {
          expect(e).toBeInstanceOf(RangeError);
        }
        // A window of words that are kernel text (a stack full of return addresses) and random ones.
        const data = Buffer.from(bytes.subarray(0, bytes.length - (bytes.length % 8)));
        for (let off = 0; off + 8 <= data.length; off += 16) data.writeBigUInt64LE(0xffffffff81000000n + BigInt(off), off);
        const w = timed(() => walkStackWindow({ base, data, stackEnd: base + BigInt(data.length) }, { rip: 0xffffffff81000010n, rbp: rbp % 2n === 0n ? base + BigInt(data.length > 16 ? 8 : 0) : rbp }, { isText, maxFrames }));
        expect(w.frames.length).toBeLessThanOrEqual(Math.max(1, Math.min(maxFrames, 4096)));
        expect(w.frames.length).toBeLessThanOrEqual(1 + data.length / 8);
      }),
      params,
    );
  });

  // A stub that answers each request with the next of a fuzzed list of replies, then stays silent.
  type Reply = { kind: 'packet'; payload: Buffer } | { kind: 'raw'; bytes: Uint8Array } | { kind: 'close' };
  const reply: fc.Arbitrary<Reply> = fc.oneof(
    fc.uint8Array({ maxLength: 300 }).map((b) => ({ kind: 'packet' as const, payload: Buffer.from(b) })),
    fc.constantFrom('OK', 'E14', 'E', 'l', 'm', 'mp01.01,p01.02', 'T05thread:p01.01;', 'S', 'W00', 'PacketSize=40;multiprocess+;qXfer:features:read+', 'PacketSize=zz', 'PacketSize=ffffffffffff').map((t) => ({ kind: 'packet' as const, payload: Buffer.from(t, 'latin1') })),
    fc.integer({ min: 0, max: 4000 }).map((n) => ({ kind: 'packet' as const, payload: Buffer.from('0'.repeat(n)) })),
    rspBytes.map((bytes) => ({ kind: 'raw' as const, bytes })),
    fc.constantFrom(Buffer.from(`$0${'*~'.repeat(5000)}#00`), Buffer.from('-'.repeat(50)), Buffer.from('$unterminated'), Buffer.from('%Stop:T05#00')).map((bytes) => ({ kind: 'raw' as const, bytes })),
    fc.constant({ kind: 'close' as const }),
  );

  const HANDSHAKE: Reply[] = ['PacketSize=1000;multiprocess+;vContSupported+', 'T05thread:p01.01;'].map((t) => ({ kind: 'packet', payload: Buffer.from(t, 'latin1') }));

  let server: Server;
  let dir: string;
  let path: string;
  let script: Reply[] = [];
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    // (Not tempDirs: its afterEach would remove the socket after the file's first test.)
    dir = mkdtempSync(join(tmpdir(), 'eve-diag-fuzz-gdb-'));
    path = join(dir, 'gdb.sock');
    server = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
      const d = new PacketDecoder();
      let next = 0;
      s.on('data', (chunk) => {
        for (const item of d.push(chunk)) {
          if (item.kind !== 'packet' || s.destroyed) continue;
          const r = script[next++];
          if (r === undefined) continue;
          if (r.kind === 'close') s.destroy();
          else s.write(r.kind === 'packet' ? Buffer.concat([Buffer.from('+'), encodePacket(r.payload)]) : r.bytes);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  test('GdbClient against a hostile stub: every call resolves or rejects with a GdbError, within its timeouts', async () => {
    const timeoutMs = 40;
    let connects = 0;
    await fc.assert(
      // Half the scripts first answer the handshake as QEMU does, so the calls after connect are fuzzed too.
      fc.asyncProperty(fc.array(reply, { minLength: 1, maxLength: 8 }), fc.boolean(), async (replies, handshake) => {
        script = handshake ? [...HANDSHAKE, ...replies] : replies;
        const t0 = performance.now();
        const outcomes: string[] = [];
        const expectGdb = (e: unknown) => {
          if (!(e instanceof GdbError)) throw e;
          outcomes.push(e.name);
        };
        let calls = 1;
        let connected = false;
        const c = await GdbClient.connect({ path }, { timeoutMs, connectTimeoutMs: 500, settleMs: 0, maxPacketBytes: 4096 }).catch(expectGdb);
        if (c) {
          connected = true;
          for (const call of [() => c.readRegisters(), () => c.readMemory(0xffffffff81000000n, 100), () => c.threads(8), () => c.monitor('info registers')]) {
            calls++;
            await call().then((v) => {
              if (Buffer.isBuffer(v)) expect(v.length).toBeLessThanOrEqual(4096);
              if (Array.isArray(v)) expect(v.length).toBeLessThanOrEqual(9);
            }, expectGdb);
          }
          await c.close();
        }
        // connect makes up to 4 requests (qSupported, qXfer, ?); readMemory of 100 bytes at most 100
        // (a stub answering one byte each); each waits at most timeoutMs; plus a loaded machine's slack.
        expect(performance.now() - t0).toBeLessThan((calls + 4 + 100 + 1) * timeoutMs + SLOW_MS);
        if (connected) connects++;
      }),
      { ...params, numRuns: Math.max(20, Math.ceil(RUNS / 10)) },
    );
    // The handshake scripts connect: the calls after connect were fuzzed, not only the handshake.
    expect(connects).toBeGreaterThan(0);
  }, 120_000);
});

describe('ERST records (what the guest kernel wrote to the error record store)', () => {
  const real = gunzipSync(readFileSync(join(import.meta.dirname, '..', 'host-reader', 'erst', 'fixtures', 'debian-6.1-panic.erst.gz')));
  const check = (bytes: Uint8Array) => {
    timed(() => {
      try {
        const s = decodeErst(bytes, { maxInflatedBytes: 256 * 1024 });
        for (const d of s.dumps) expect(d.text.length).toBeLessThanOrEqual(8 * 1024 * 1024);
      } catch (e) {
        if (!(e instanceof ErstDecodeError)) throw e;
      }
      const r = readErst(bytes, { maxInflatedBytes: 256 * 1024 });
      expect(r.errors.every((e) => e instanceof ErstDecodeError)).toBe(true);
    });
  };

  test('the real store (Debian 6.1 panicked by SysRq c) mutated: bytes, 32-bit words in the headers, cuts', () => {
    // The store header, the slot table, and each record's CPER header and section descriptor.
    const hot = [8, 12, 16, 20, 24, 32];
    for (let at = 0; at + 8192 <= real.length && hot.length < 200; at += 8192) hot.push(at + 6, at + 10, at + 20, at + 96, at + 104, at + 128, at + 132, at + 200);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: real.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 16 }),
        fc.array(fc.tuple(fc.constantFrom(...hot), fc.constantFrom(0, 1, 199, 200, 4096, 8192, 0x10000, 0x7fff_ffff, 0xffff_ffff)), { maxLength: 4 }),
        fc.option(fc.nat({ max: real.length }), { nil: undefined }),
        (bytes, words, cut) => {
          const b = Buffer.from(real);
          for (const [at, v] of bytes) b[at] = v;
          for (const [at, v] of words) if (at + 4 <= b.length) b.writeUInt32LE(v, at);
          check(cut === undefined ? b : b.subarray(0, cut));
        },
      ),
      params,
    );
  });

  test('decodeCperRecord on any bytes: a record or an ErstDecodeError', () => {
    const rec = real.subarray(8192, 8192 * 2);
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 1000 }), fc.array(fc.tuple(fc.nat({ max: 300 }), fc.integer({ min: 0, max: 255 })), { maxLength: 12 }).map((w) => {
        const b = Buffer.from(rec);
        for (const [at, v] of w) b[at] = v;
        return b;
      })), (bytes) => {
        try {
          timed(() => decodeCperRecord(bytes));
        } catch (e) {
          if (!(e instanceof ErstDecodeError)) throw e;
        }
      }),
      params,
    );
  });

  test('inflateBody and parseDumpLine: bounded output or an ErstDecodeError, never another throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.string({ unit: 'binary', maxLength: 200 }), fc.constantFrom(0, 1, 1024, 65536), (data, line, max) => {
        try {
          const r = timed(() => inflateBody(data, max));
          expect(r.data.length).toBeLessThanOrEqual(Math.max(1, max));
        } catch (e) {
          if (!(e instanceof ErstDecodeError)) throw e;
        }
        const p = parseDumpLine(line);
        if (p !== undefined) expect(Number.isSafeInteger(p.part) && Number.isSafeInteger(p.dumpCount)).toBe(true);
      }),
      params,
    );
  });
});
