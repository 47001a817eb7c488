import type { Command } from 'commander';
import type { DiagLayout } from '../acpi/diag/layout.js';
import { EVE_DOM_RE, EVE_KVM_DIR, eveDomPaths } from '../host-reader/eve.js';
import { checkDomainRef, LIBVIRT_URI_DEFAULT, LibvirtRefError, openLibvirtTarget, type LibvirtDomainRef } from '../host-reader/libvirt/index.js';
import { DEFAULT_MEMORY_PATH, loadLayout, MEMORY_PATHS, SessionInputError, type MemoryPath } from '../host-reader/session.js';
import { UsageError } from './usage-error.js';

/** Options shared by every command that names a VM. */
export interface TargetFlags {
  qmp?: string;
  eveDom?: string;
  libvirtDomain?: string;
  libvirtUri?: string;
  layout: string;
  memory: string;
  memPath?: string;
  pid?: string;
}

export function addTargetOptions(c: Command): Command {
  return c
    .option('--qmp <socket>', "the VM's QMP unix socket")
    .option('--eve-dom <name>', `an EVE VM: uses ${EVE_KVM_DIR}/<name>/qmp`)
    .option('--libvirt-domain <name>', 'a libvirt domain on this host: QMP through libvirt (virsh), the QEMU pid from libvirt\'s pidfile')
    .option('--libvirt-uri <uri>', `with --libvirt-domain: the libvirt connection (qemu:///system, qemu:///session?socket=...)`, LIBVIRT_URI_DEFAULT)
    .requiredOption('--layout <file.json>', 'the layout written by `eve-diag ssdt build`')
    .option(
      '--memory <path>',
      `how to read guest memory: ${MEMORY_PATHS.join(', ')}; auto = procmem (/proc/<qemu pid>/mem: needs ptrace rights over QEMU, ` +
        'the pid from EVE\'s pidfile or the QMP socket\'s owner) where allowed, else pmemsave',
      DEFAULT_MEMORY_PATH,
    )
    .option('--mem-path <file>', 'with --memory file: the memory-backend-file mem-path of the VM')
    .option('--pid <pid>', "with --memory procmem or auto: QEMU's pid (default: EVE's or libvirt's pidfile, else the owner of the QMP socket)");
}

/** Which VM a command names: a QMP socket, or a libvirt domain (its QMP socket is opened by openTarget). */
export interface TargetSpec {
  qmpPath?: string;
  libvirt?: LibvirtDomainRef;
  memory: MemoryPath;
  pid?: number;
}

export function resolveTarget(f: TargetFlags): TargetSpec {
  const named = (['qmp', 'eveDom', 'libvirtDomain'] as const).filter((k) => f[k] !== undefined);
  if (named.length > 1) {
    const flag = { qmp: '--qmp', eveDom: '--eve-dom', libvirtDomain: '--libvirt-domain' };
    throw new UsageError(flag[named[1] as keyof typeof flag], f[named[1] as keyof TargetFlags] as string, `give one of --qmp, --eve-dom and --libvirt-domain (also got ${flag[named[0] as keyof typeof flag]})`);
  }
  if (f.eveDom !== undefined && !EVE_DOM_RE.test(f.eveDom)) {
    throw new UsageError('--eve-dom', f.eveDom, 'an EVE domain name (letters, digits, . _ -)');
  }
  let libvirt: LibvirtDomainRef | undefined;
  if (f.libvirtDomain !== undefined) {
    try {
      libvirt = checkDomainRef({ domain: f.libvirtDomain, uri: f.libvirtUri ?? LIBVIRT_URI_DEFAULT });
    } catch (e) {
      if (e instanceof LibvirtRefError) throw new UsageError(e.field === 'domain' ? '--libvirt-domain' : '--libvirt-uri', e.value, e.reason, { cause: e });
      throw e;
    }
  }
  const qmpPath = f.qmp ?? (f.eveDom !== undefined ? eveDomPaths(f.eveDom).qmp : undefined);
  if (!qmpPath && !libvirt) throw new UsageError('--qmp', undefined, 'name the VM with --qmp SOCKET, --eve-dom NAME or --libvirt-domain NAME');
  if (!(MEMORY_PATHS as readonly string[]).includes(f.memory)) {
    throw new UsageError('--memory', f.memory, `one of ${MEMORY_PATHS.join(', ')}`);
  }
  if (f.memory === 'file' && !f.memPath) throw new UsageError('--mem-path', undefined, 'required with --memory file');
  const where = { ...(qmpPath !== undefined ? { qmpPath } : {}), ...(libvirt !== undefined ? { libvirt } : {}) };
  if (f.pid === undefined) return { ...where, memory: f.memory as MemoryPath };
  if (f.memory !== 'procmem' && f.memory !== 'auto') throw new UsageError('--pid', f.pid, `only read with --memory procmem or auto (got --memory ${f.memory})`);
  const pid = Number(f.pid);
  // Linux pids are at most 2^22 (pid_max's limit).
  if (!/^\d{1,7}$/.test(f.pid) || pid < 1 || pid > 4_194_304) throw new UsageError('--pid', f.pid, 'a process id, 1..4194304');
  return { ...where, memory: f.memory as MemoryPath, pid };
}

/** A target's QMP socket to connect to, what names it in output, and the pidfile procmem should use. */
export interface OpenTarget {
  qmpPath: string;
  /** `libvirt:NAME` or the socket path. */
  label: string;
  pidFile?: string;
  close(): Promise<void>;
}

/** For a libvirt domain, opens its QMP bridge (closed by `close()`); otherwise the socket as given. */
export async function openTarget(t: TargetSpec): Promise<OpenTarget> {
  if (t.libvirt === undefined) return { qmpPath: t.qmpPath as string, label: t.qmpPath as string, close: async () => undefined };
  const lv = await openLibvirtTarget(t.libvirt);
  // The bridge asked libvirt at open: no second query-version.
  const problem = lv.xmlError ?? lv.bridge.unreachable;
  if (problem !== undefined) {
    await lv.close();
    throw new Error(`libvirt domain ${JSON.stringify(t.libvirt.domain)} (${t.libvirt.uri}): ${problem}`);
  }
  return { qmpPath: lv.qmpPath, label: `libvirt:${t.libvirt.domain}`, pidFile: lv.pidFile, close: lv.close };
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
