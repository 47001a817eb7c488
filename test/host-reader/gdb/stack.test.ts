import { describe, expect, test } from 'vitest';
import { readStackWindow, walkStackWindow, type StackWindow } from '../../../host-reader/gdb/stack.js';

const STACK = 0xffffc90000080000n; // a 16 KiB-aligned task stack
const isText = (a: bigint) => a >= 0xffffffff81000000n && a < 0xffffffff82000000n;

class Memory {
  readonly pages = new Map<bigint, Buffer>();
  reads: { addr: bigint; len: number }[] = [];
  page(addr: bigint): Buffer {
    const base = addr & ~0xfffn;
    let p = this.pages.get(base);
    if (p === undefined) this.pages.set(base, (p = Buffer.alloc(4096)));
    return p;
  }
  word(addr: bigint, v: bigint): void {
    this.page(addr).writeBigUInt64LE(v, Number(addr & 0xfffn));
  }
  readMemory(addr: bigint, len: number): Promise<Buffer> {
    this.reads.push({ addr, len });
    const out = Buffer.alloc(len);
    for (let i = 0; i < len; i++) {
      const a = addr + BigInt(i);
      const p = this.pages.get(a & ~0xfffn);
      if (p === undefined) return Promise.reject(new Error('E14'));
      out[i] = p[Number(a & 0xfffn)] as number;
    }
    return Promise.resolve(out);
  }
}

function mapStack(m: Memory): void {
  for (let a = STACK; a < STACK + 0x4000n; a += 0x1000n) m.page(a);
}

describe('readStackWindow', () => {
  test('from RSP to the end of its 16 KiB-aligned stack, page by page', async () => {
    const m = new Memory();
    mapStack(m);
    const w = (await readStackWindow(m, STACK + 0x2ff8n)) as StackWindow;
    expect(w.base).toBe(STACK + 0x2ff8n);
    expect(w.stackEnd).toBe(STACK + 0x4000n);
    expect(w.data.length).toBe(0x1008);
    expect(w.stoppedBy).toBeUndefined();
    expect(m.reads).toEqual([
      { addr: STACK + 0x2ff8n, len: 8 },
      { addr: STACK + 0x3000n, len: 0x1000 },
    ]);
  });

  test('an unaligned RSP is rounded up; maxBytes bounds the read; a read error keeps what came before', async () => {
    const m = new Memory();
    mapStack(m);
    const w = (await readStackWindow(m, STACK + 0x3n, { maxBytes: 0x1800 })) as StackWindow;
    expect(w.base).toBe(STACK + 8n);
    expect(w.data.length).toBe(0x1800);
    expect(w.stoppedBy).toBe('limit');
    m.pages.delete(STACK + 0x2000n);
    const cut = (await readStackWindow(m, STACK + 0x1f00n)) as StackWindow;
    expect(cut.data.length).toBe(0x100);
    expect(cut.stoppedBy).toMatch(/^read at 0xffffc90000082000: E14/);
  });

  test('RSP not a kernel address: nothing read; a bad thread size is refused', async () => {
    const m = new Memory();
    expect(await readStackWindow(m, 0x7ffc12345678n)).toBeUndefined();
    expect(m.reads).toHaveLength(0);
    await expect(readStackWindow(m, STACK, { threadSize: 12345 })).rejects.toBeInstanceOf(RangeError);
    // At the very end of the stack: an empty window.
    expect((await readStackWindow(m, STACK + 0x4000n - 0n, { maxBytes: 0 }))?.data.length).toBe(0);
  });
});

describe('walkStackWindow', () => {
  function windowOf(words: bigint[], base = STACK + 0x3f00n): StackWindow {
    const data = Buffer.alloc(words.length * 8);
    words.forEach((w, i) => data.writeBigUInt64LE(w, i * 8));
    return { base, data, stackEnd: STACK + 0x4000n };
  }

  test('no frame pointers (ORC kernels): every text word is a scanned frame, in stack order', () => {
    const w = windowOf([0n, 0xffffffff81001234n, 0xffff888000001000n, 0xffffffff81005678n, 0x7fffffffe000n]);
    const r = walkStackWindow(w, { rip: 0xffffffff81000010n, rbp: 0n }, { isText });
    expect(r).toEqual({
      frames: [
        { pc: 0xffffffff81000010n, kind: 'pc' },
        { pc: 0xffffffff81001234n, sp: STACK + 0x3f08n, kind: 'scanned' },
        { pc: 0xffffffff81005678n, sp: STACK + 0x3f18n, kind: 'scanned' },
      ],
      framePointerFrames: 0,
      truncated: false,
    });
  });

  test('a frame pointer chain of two frames or more is reliable; the other text words stay guesses', () => {
    const b = STACK + 0x3f00n;
    // [b+0]=rbp1 [b+8]=ret1 [b+0x10]=stale text [b+0x18]=x [b+0x20]=rbp2(=0 ends) [b+0x28]=ret2
    const w = windowOf([b + 0x20n, 0xffffffff81000100n, 0xffffffff81000200n, 0n, 0n, 0xffffffff81000300n]);
    const r = walkStackWindow(w, { rip: 0xffffffff81000010n, rbp: b }, { isText });
    expect(r.framePointerFrames).toBe(2);
    expect(r.frames.map((f) => f.kind)).toEqual(['pc', 'frame-pointer', 'scanned', 'frame-pointer']);
  });

  test('one frame that looks like one is chance (RBP is an ordinary register): scanned', () => {
    const b = STACK + 0x3f00n;
    const w = windowOf([0n, 0xffffffff81000100n]);
    const r = walkStackWindow(w, { rip: 0xffffffff81000010n, rbp: b }, { isText });
    expect(r.frames.map((f) => f.kind)).toEqual(['pc', 'scanned']);
  });

  test('hostile chains: a loop, RBP outside the window or unaligned, stop the chain', () => {
    const b = STACK + 0x3f00n;
    const loop = windowOf([b, 0xffffffff81000100n]); // [rbp] = rbp
    expect(walkStackWindow(loop, { rip: 0n, rbp: b }, { isText }).framePointerFrames).toBe(0);
    const outside = windowOf([0n, 0xffffffff81000100n]);
    expect(walkStackWindow(outside, { rip: 0n, rbp: 0xffffffffffffffffn }, { isText }).framePointerFrames).toBe(0);
    expect(walkStackWindow(outside, { rip: 0n, rbp: b + 3n }, { isText }).framePointerFrames).toBe(0);
  });

  test('frames capped at maxFrames (RIP included); no window: RIP alone', () => {
    const w = windowOf(Array.from({ length: 100 }, (_, i) => 0xffffffff81000000n + BigInt(i)));
    const r = walkStackWindow(w, { rip: 1n, rbp: 0n }, { isText, maxFrames: 10 });
    expect(r.frames).toHaveLength(10);
    expect(r.truncated).toBe(true);
    expect(walkStackWindow(undefined, { rip: 1n, rbp: 0n }, { isText }).frames).toEqual([{ pc: 1n, kind: 'pc' }]);
  });
});
