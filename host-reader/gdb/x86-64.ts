/**
 * The x86-64 register block of QEMU's gdbstub (`target/i386/gdbstub.c`, feature
 * `org.gnu.gdb.i386.core` of `i386-64bit.xml`): what `g` returns, little-endian, 608 bytes on QEMU
 * 7.2 to 10.x. The `p`/`P` register numbers are the indices of this table. Pure decoding.
 */

export interface RegisterDef {
  name: string;
  /** `p`/`P` number. */
  num: number;
  offset: number;
  size: number;
}

const GPRS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'];

function layout(): RegisterDef[] {
  const defs: RegisterDef[] = [];
  let offset = 0;
  const add = (name: string, size: number) => {
    defs.push({ name, num: defs.length, offset, size });
    offset += size;
  };
  for (const r of GPRS) add(r, 8);
  add('rip', 8);
  add('eflags', 4);
  for (const s of ['cs', 'ss', 'ds', 'es', 'fs', 'gs']) add(s, 4);
  for (const r of ['fs_base', 'gs_base', 'k_gs_base', 'cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer']) add(r, 8);
  for (let i = 0; i < 8; i++) add(`st${i}`, 10);
  for (const r of ['fctrl', 'fstat', 'ftag', 'fiseg', 'fioff', 'foseg', 'fooff', 'fop']) add(r, 4);
  for (let i = 0; i < 16; i++) add(`xmm${i}`, 16);
  add('mxcsr', 4);
  return defs;
}

export const X86_64_REGISTERS: readonly RegisterDef[] = layout();
/** Bytes of the whole `g` block. */
export const X86_64_G_BYTES = 608;
export const REG = Object.fromEntries(X86_64_REGISTERS.map((r) => [r.name, r])) as Record<string, RegisterDef>;

/** The registers eve-diag reads: the general ones, rip, flags, segment bases and control registers. */
export interface X86Registers {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rbp: bigint;
  rsp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  eflags: number;
  cs: number;
  ss: number;
  fs_base: bigint;
  gs_base: bigint;
  k_gs_base: bigint;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

/** Decodes a `g` block (at least the first 236 bytes: up to efer); throws a RangeError if shorter. */
export function decodeRegisters(block: Buffer): X86Registers {
  const efer = REG['efer'] as RegisterDef;
  if (block.length < efer.offset + efer.size) throw new RangeError(`register block of ${block.length} bytes: an x86-64 block has ${X86_64_G_BYTES}`);
  const q = (name: string) => block.readBigUInt64LE((REG[name] as RegisterDef).offset);
  const d = (name: string) => block.readUInt32LE((REG[name] as RegisterDef).offset);
  const out: Record<string, bigint | number> = {};
  for (const r of GPRS) out[r] = q(r);
  for (const r of ['rip', 'fs_base', 'gs_base', 'k_gs_base', 'cr0', 'cr2', 'cr3', 'cr4', 'efer']) out[r] = q(r);
  for (const r of ['eflags', 'cs', 'ss']) out[r] = d(r);
  return out as unknown as X86Registers;
}

/** The privilege level the vCPU runs at: the low two bits of CS. */
export const cpl = (r: Pick<X86Registers, 'cs'>): number => r.cs & 3;
/** Interrupts enabled (EFLAGS.IF). */
export const interruptsOn = (r: Pick<X86Registers, 'eflags'>): boolean => (r.eflags & 0x200) !== 0;

/** A register's value as the little-endian bytes `P` takes. */
export function encodeRegister(def: RegisterDef, value: bigint): Buffer {
  const b = Buffer.alloc(def.size);
  let v = BigInt.asUintN(def.size * 8, value);
  for (let i = 0; i < def.size; i++) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}
