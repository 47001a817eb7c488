/**
 * A libvirt domain made into what the rest of eve-diag reads a VM through: a QMP socket (the bridge,
 * in a private temporary directory), QEMU's pidfile (libvirt's, for procmem) and the console log the
 * domain XML names.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkDomainRef, libvirtPidFile, type LibvirtDomainRef } from './domain-ref.js';
import { consoleLogOf, parseDomainXml, type DomainXml } from './domain-xml.js';
import { LibvirtQmpBridge } from './qmp-bridge.js';
import { Virsh, type LibvirtLink } from './virsh.js';

export { checkDomainRef, LIBVIRT_URI_DEFAULT, LibvirtRefError, libvirtPidFile, type LibvirtDomainRef } from './domain-ref.js';
export { LibvirtError, Virsh, type LibvirtLink } from './virsh.js';
export { LibvirtQmpBridge } from './qmp-bridge.js';
export { consoleLogOf, parseDomainXml, type DomainXml } from './domain-xml.js';

export interface LibvirtTarget {
  ref: LibvirtDomainRef;
  /** The bridge's QMP socket. */
  qmpPath: string;
  /** libvirt's pidfile of the domain's QEMU. */
  pidFile: string;
  /** The domain XML as read at open; undefined when `dumpxml` failed (`xmlError` says why). */
  xml?: DomainXml;
  xmlError?: string;
  /** The serial console's log file, from the XML. */
  consoleLog?: string;
  bridge: LibvirtQmpBridge;
  close(): Promise<void>;
}

export interface OpenLibvirtOptions {
  /** Default: `Virsh` over the ref. */
  link?: LibvirtLink;
  log?: (level: 'info' | 'warn', msg: string) => void;
}

/** Opens the bridge for `ref` in a new 0700 temporary directory (removed by `close()`) and reads its XML. */
export async function openLibvirtTarget(ref: LibvirtDomainRef, o: OpenLibvirtOptions = {}): Promise<LibvirtTarget> {
  checkDomainRef(ref);
  const link = o.link ?? new Virsh({ ref });
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-libvirt-'));
  let bridge: LibvirtQmpBridge;
  try {
    bridge = await LibvirtQmpBridge.open({ link, dir, ...(o.log ? { log: o.log } : {}) });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  let xml: DomainXml | undefined;
  let xmlError: string | undefined;
  try {
    xml = parseDomainXml(await link.dumpXml());
  } catch (e) {
    xmlError = (e as Error).message;
  }
  const consoleLog = xml === undefined ? undefined : consoleLogOf(xml);
  return {
    ref,
    qmpPath: bridge.path,
    pidFile: libvirtPidFile(ref),
    ...(xml !== undefined ? { xml } : {}),
    ...(xmlError !== undefined ? { xmlError } : {}),
    ...(consoleLog !== undefined ? { consoleLog } : {}),
    bridge,
    close: async () => {
      await bridge.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
