import type { Command } from 'commander';
import type { DiagLayout } from '../acpi/diag/layout.js';
import { EVE_DOM_RE, EVE_KVM_DIR, eveDomPaths } from '../host-reader/eve.js';
import { DEFAULT_MEMORY_PATH, loadLayout, MEMORY_PATHS, SessionInputError, type MemoryPath } from '../host-reader/session.js';
import { UsageError } from './usage-error.js';

/** Options shared by every command that names a VM. */
export interface TargetFlags {
  qmp?: string;
  eveDom?: string;
  layout: string;
  memory: string;
  memPath?: string;
  pid?: string;
}

export function addTargetOptions(c: Command): Command {
  return c
    .option('--qmp <socket>', "the VM's QMP unix socket")
    .option('--eve-dom <name>', `an EVE VM: uses ${EVE_KVM_DIR}/<name>/qmp`)
    .requiredOption('--layout <file.json>', 'the layout written by `eve-diag ssdt build`')
    .option(
      '--memory <path>',
      `how to read guest memory: ${MEMORY_PATHS.join(', ')}; auto = procmem (/proc/<qemu pid>/mem: needs ptrace rights over QEMU, ` +
        'the pid from EVE\'s pidfile or the QMP socket\'s owner) where allowed, else pmemsave',
      DEFAULT_MEMORY_PATH,
    )
    .option('--mem-path <file>', 'with --memory file: the memory-backend-file mem-path of the VM')
    .option('--pid <pid>', "with --memory procmem or auto: QEMU's pid (default: EVE's pidfile, else the owner of the QMP socket)");
}

export function resolveTarget(f: TargetFlags): { qmpPath: string; memory: MemoryPath; pid?: number } {
  if (f.qmp && f.eveDom) throw new UsageError('--qmp', f.qmp, 'give either --qmp or --eve-dom, not both');
  if (f.eveDom !== undefined && !EVE_DOM_RE.test(f.eveDom)) {
    throw new UsageError('--eve-dom', f.eveDom, 'an EVE domain name (letters, digits, . _ -)');
  }
  const qmpPath = f.qmp ?? (f.eveDom !== undefined ? eveDomPaths(f.eveDom).qmp : undefined);
  if (!qmpPath) throw new UsageError('--qmp', undefined, 'name the VM with --qmp SOCKET or --eve-dom NAME');
  if (!(MEMORY_PATHS as readonly string[]).includes(f.memory)) {
    throw new UsageError('--memory', f.memory, `one of ${MEMORY_PATHS.join(', ')}`);
  }
  if (f.memory === 'file' && !f.memPath) throw new UsageError('--mem-path', undefined, 'required with --memory file');
  if (f.pid === undefined) return { qmpPath, memory: f.memory as MemoryPath };
  if (f.memory !== 'procmem' && f.memory !== 'auto') throw new UsageError('--pid', f.pid, `only read with --memory procmem or auto (got --memory ${f.memory})`);
  const pid = Number(f.pid);
  // Linux pids are at most 2^22 (pid_max's limit).
  if (!/^\d{1,7}$/.test(f.pid) || pid < 1 || pid > 4_194_304) throw new UsageError('--pid', f.pid, 'a process id, 1..4194304');
  return { qmpPath, memory: f.memory as MemoryPath, pid };
}

/** `--layout FILE`: a bad file is a usage error naming the flag. */
export async function loadLayoutFlag(path: string): Promise<DiagLayout> {
  try {
    return await loadLayout(path);
  } catch (e) {
    if (e instanceof SessionInputError) throw new UsageError(e.field, e.value, e.message.replace(/^[^:]+: /, '').replace(/ \(got .*\)$/, ''), { cause: e });
    throw e;
  }
}
