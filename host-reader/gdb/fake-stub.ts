import { createServer, type Server, type Socket } from 'node:net';
import { encodePacket, PacketDecoder, toHex } from './packet.js';
import { X86_64_G_BYTES } from './x86-64.js';

/**
 * A fake of QEMU's gdbstub for tests of GdbClient and what uses it: vCPU threads with a register
 * block each, a sparse virtual memory of 4 KiB pages (unmapped pages answer E14), breakpoints that a
 * test fires with `hit()`, and QEMU 7.2's quirks (a `+` before every reply, a stop reply sent unasked
 * right after connect, `p` empty until target.xml was read, `D` refused with E22 once multiprocess is
 * on, a read over 0x800 bytes answered E22). `raw` lets a test send anything at all instead.
 */

export interface FakeStubOptions {
  cpus?: number;
  /** Send `$T02thread:p01.01;#..` right after connect (QEMU 7.2). Default true. */
  unsolicitedStop?: boolean;
  packetSize?: number;
}

export class FakeGdbStub {
  readonly server: Server;
  readonly registers: Buffer[];
  readonly pages = new Map<bigint, Buffer>();
  readonly breakpoints = new Set<bigint>();
  readonly received: string[] = [];
  /** Replaces the stub's answer to a request: undefined answers normally, `{ silent: true }` not at all. */
  override: ((payload: string) => string | Buffer | { silent: true } | undefined) | undefined;
  detached = false;
  running = false;
  #socket: Socket | undefined;
  #xmlRead = false;
  #multiprocess = false;
  #selected = 0;
  #o: Required<FakeStubOptions>;
  #port = 0;

  constructor(o: FakeStubOptions = {}) {
    this.#o = { cpus: 2, unsolicitedStop: true, packetSize: 0x1000, ...o };
    this.registers = Array.from({ length: this.#o.cpus }, () => Buffer.alloc(X86_64_G_BYTES));
    this.server = createServer((s) => this.#accept(s));
  }

  async listen(): Promise<{ host: string; port: number }> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    const a = this.server.address();
    this.#port = typeof a === 'object' && a !== null ? a.port : 0;
    return { host: '127.0.0.1', port: this.#port };
  }

  async close(): Promise<void> {
    this.#socket?.destroy();
    await new Promise((r) => this.server.close(r));
  }

  /** Maps `data` at virtual `addr` (page-aligned pieces are created as needed). */
  map(addr: bigint, data: Buffer): void {
    for (let i = 0; i < data.length; i++) {
      const a = addr + BigInt(i);
      const page = a & ~0xfffn;
      let p = this.pages.get(page);
      if (p === undefined) this.pages.set(page, (p = Buffer.alloc(4096)));
      p[Number(a & 0xfffn)] = data[i] as number;
    }
  }

  /** Fires a breakpoint on vCPU `cpu` while the VM runs (after the client's `c`). */
  hit(cpu = 0): void {
    if (!this.running) throw new Error('the VM is not running');
    this.running = false;
    this.#reply(`T05thread:${this.#tid(cpu)};`);
  }

  /** Sends bytes as they are. */
  raw(bytes: Buffer | string): void {
    this.#socket?.write(bytes);
  }

  #tid(cpu: number): string {
    return this.#multiprocess ? `p01.${(cpu + 1).toString(16).padStart(2, '0')}` : (cpu + 1).toString(16).padStart(2, '0');
  }

  #accept(s: Socket): void {
    this.#socket?.destroy();
    this.#socket = s;
    s.setNoDelay(true);
    this.running = false;
    const dec = new PacketDecoder();
    s.on('data', (chunk: Buffer) => {
      for (const item of dec.push(chunk)) {
        if (item.kind === 'packet') this.#handle(item.payload.toString('latin1'));
        else if (item.kind === 'noise' && chunk.includes(0x03) && this.running) {
          this.running = false;
          this.#reply('T02thread:p01.01;');
        }
      }
    });
    s.on('error', () => undefined);
    if (this.#o.unsolicitedStop) s.write(encodePacket('T02thread:01;'));
  }

  #reply(text: string | Buffer): void {
    this.#socket?.write('+');
    this.#socket?.write(encodePacket(text));
  }

  #cpuOf(id: string): number | undefined {
    const m = /^(?:p[0-9a-f]+\.)?(-?[0-9a-f]+)$/.exec(id);
    if (m === null) return undefined;
    const n = Number.parseInt(m[1] as string, 16);
    if (n === 0 || n === -1) return this.#selected;
    return n >= 1 && n <= this.#o.cpus ? n - 1 : undefined;
  }

  #read(addr: bigint, len: number): Buffer | undefined {
    const out = Buffer.alloc(len);
    for (let i = 0; i < len; i++) {
      const a = addr + BigInt(i);
      const p = this.pages.get(a & ~0xfffn);
      if (p === undefined) return undefined;
      out[i] = p[Number(a & 0xfffn)] as number;
    }
    return out;
  }

  #handle(p: string): void {
    this.received.push(p);
    const o = this.override?.(p);
    if (o !== undefined && !Buffer.isBuffer(o) && typeof o === 'object') return;
    if (o !== undefined) return this.#reply(o);
    if (p.startsWith('qSupported')) {
      if (p.includes('multiprocess+')) this.#multiprocess = true;
      return this.#reply(`PacketSize=${this.#o.packetSize.toString(16)};qXfer:features:read+;vContSupported+;multiprocess+`);
    }
    if (p.startsWith('qXfer:features:read:target.xml:')) {
      this.#xmlRead = true;
      return this.#reply('l<?xml version="1.0"?><target><architecture>i386:x86-64</architecture></target>');
    }
    if (p === '?') return this.#reply(`T05thread:${this.#tid(this.#selected)};`);
    if (p === 'qfThreadInfo') return this.#reply(`m${Array.from({ length: this.#o.cpus }, (_, i) => this.#tid(i)).join(',')}`);
    if (p === 'qsThreadInfo') return this.#reply('l');
    if (p.startsWith('qThreadExtraInfo,')) {
      const cpu = this.#cpuOf(p.slice(17));
      return this.#reply(cpu === undefined ? 'E22' : toHex(Buffer.from(`CPU#${cpu} [halted ]`)));
    }
    if (p.startsWith('Hg') || p.startsWith('Hc')) {
      const cpu = this.#cpuOf(p.slice(2));
      if (cpu === undefined) return this.#reply('E22');
      if (p[1] === 'g') this.#selected = cpu;
      return this.#reply('OK');
    }
    if (p === 'g') return this.#reply(toHex(this.registers[this.#selected] as Buffer));
    if (/^p[0-9a-f]+$/.test(p)) {
      if (!this.#xmlRead) return this.#reply('');
      const n = Number.parseInt(p.slice(1), 16);
      const off = [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128][n];
      return this.#reply(off === undefined ? 'E14' : toHex((this.registers[this.#selected] as Buffer).subarray(off, off + 8)));
    }
    if (/^P[0-9a-f]+=/.test(p)) {
      const [num, hex] = p.slice(1).split('=') as [string, string];
      const n = Number.parseInt(num, 16);
      if (n > 16) return this.#reply('E14');
      Buffer.from(hex, 'hex').copy(this.registers[this.#selected] as Buffer, n * 8);
      return this.#reply('OK');
    }
    let m = /^m([0-9a-f]+),([0-9a-f]+)$/.exec(p);
    if (m !== null) {
      const len = Number.parseInt(m[2] as string, 16);
      if (len > 0x800) return this.#reply('E22');
      const b = this.#read(BigInt(`0x${m[1]}`), len);
      return this.#reply(b === undefined ? 'E14' : toHex(b));
    }
    m = /^M([0-9a-f]+),([0-9a-f]+):([0-9a-f]*)$/.exec(p);
    if (m !== null) {
      const addr = BigInt(`0x${m[1]}`);
      if (this.#read(addr, Number.parseInt(m[2] as string, 16)) === undefined) return this.#reply('E14');
      this.map(addr, Buffer.from(m[3] as string, 'hex'));
      return this.#reply('OK');
    }
    m = /^([Zz])([01]),([0-9a-f]+),\d+$/.exec(p);
    if (m !== null) {
      const a = BigInt(`0x${m[3]}`);
      if (m[1] === 'Z') this.breakpoints.add(a);
      else this.breakpoints.delete(a);
      return this.#reply('OK');
    }
    if (p === 'c') {
      this.running = true;
      return this.#socket?.write('+') as unknown as void;
    }
    if (p === 'D' || p === 'D;1') {
      if (p === 'D' && this.#multiprocess) return this.#reply('E22');
      this.detached = true;
      this.breakpoints.clear();
      this.running = true;
      return this.#reply('OK');
    }
    if (p.startsWith('qRcmd,')) {
      const cmd = Buffer.from(p.slice(6), 'hex').toString();
      this.#reply(`O${toHex(Buffer.from(`you said ${cmd}\n`))}`);
      return this.#reply('OK');
    }
    return this.#reply('');
  }
}
