import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { checkTable, MAX_TABLE_BYTES, type TableCheck } from '../acpi/table.js';
import { UsageError } from './usage-error.js';

/**
 * Reads an ACPI table file named by a flag or argument: its size is checked before a byte is read (a
 * wrong path to a disk image must not be read whole), then checkTable (acpi/table.ts). Every problem is
 * a UsageError naming `flag` and what the user typed.
 */
export async function readTableFile(flag: string, typed: string, path: string, opts: { exact?: boolean } = {}): Promise<Extract<TableCheck, { ok: true }>> {
  let bytes: Uint8Array;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; it has no effect on files.
    const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (st.isDirectory()) throw new Error('EISDIR: a directory, not a table file');
      if (!st.isFile()) throw new Error('not a regular file');
      if (st.size > MAX_TABLE_BYTES) throw new UsageError(flag, typed, `not an ACPI table: ${st.size} bytes, more than ${MAX_TABLE_BYTES}`);
      bytes = new Uint8Array(st.size);
      const { bytesRead } = await fh.read(bytes, 0, st.size, 0);
      bytes = bytes.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(flag, typed, `cannot read the table: ${(e as Error).message}`, { cause: e });
  }
  const c = checkTable(bytes, opts);
  if (!c.ok) throw new UsageError(flag, typed, `not an ACPI table: ${c.reason}`);
  return c;
}
