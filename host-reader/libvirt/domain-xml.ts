/**
 * What eve-diag needs from a libvirt domain's XML (`virsh dumpxml`, libvirt's formatdomain): its name
 * and UUID, where the serial console is logged, and the `<qemu:commandline>` arguments (where
 * `eve-diag qemu-args --format libvirt` puts the table). Pure; a streaming parser (saxes), so a
 * document deep or wide costs its length and no more; longer than MAX_DOMAIN_XML_BYTES is refused.
 * saxes's namespace mode walks its scope stack per element (quadratic in depth), so namespaces are
 * resolved here: libvirt declares the QEMU namespace's prefix on `<domain>`, and only that is read.
 */
import { SaxesParser } from 'saxes';

export const MAX_DOMAIN_XML_BYTES = 4 * 1024 * 1024;
export const QEMU_XML_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';
/** The deepest element read: domain/devices/serial/log. */
const MAX_NAMED_DEPTH = 4;

export interface DomainCharDev {
  /** `serial` or `console`. */
  element: 'serial' | 'console';
  /** The chardev type (`pty`, `file`, `unix`...). */
  type: string;
  /** `<log file=...>`: where libvirt (virtlogd) or QEMU logs what the guest writes. */
  logFile?: string;
  /** `<source path=...>` of a `file` chardev: the guest's output itself. */
  sourcePath?: string;
}

export interface DomainXml {
  name: string;
  uuid?: string;
  /** The domain type (`kvm`, `qemu`). */
  type: string;
  charDevs: DomainCharDev[];
  /** `<qemu:commandline><qemu:arg value=...>`, in order. */
  qemuArgs: string[];
}

export class DomainXmlError extends Error {
  override name = 'DomainXmlError';
}

/** Decodes `xml`; throws DomainXmlError when it is not a libvirt domain. */
export function parseDomainXml(xml: string): DomainXml {
  if (xml.length > MAX_DOMAIN_XML_BYTES) throw new DomainXmlError(`domain XML of ${xml.length} characters (more than ${MAX_DOMAIN_XML_BYTES})`);
  const parser = new SaxesParser();
  const stack: string[] = [];
  let depth = 0;
  let qemuPrefix: string | undefined;
  const out: DomainXml = { name: '', type: '', charDevs: [], qemuArgs: [] };
  let text = '';
  let current: DomainCharDev | undefined;
  parser.on('opentag', (tag) => {
    const attr = (a: string): string | undefined => tag.attributes[a];
    if (depth === 0) {
      for (const [k, v] of Object.entries(tag.attributes)) if (k.startsWith('xmlns:') && v === QEMU_XML_NS) qemuPrefix = `${k.slice(6)}:`;
    }
    const name = qemuPrefix !== undefined && tag.name.startsWith(qemuPrefix) ? `qemu:${tag.name.slice(qemuPrefix.length)}` : tag.name.includes(':') ? `?${tag.name}` : tag.name;
    // Only the first levels matter: deeper elements are counted, not named (a path per element
    // would cost the depth each, quadratic in a hostile document).
    depth += 1;
    if (depth > MAX_NAMED_DEPTH) return;
    stack.push(name);
    const path = stack.join('/');
    text = '';
    if (path === 'domain') out.type = attr('type') ?? '';
    else if (path === 'domain/devices/serial' || path === 'domain/devices/console') {
      current = { element: name as 'serial' | 'console', type: attr('type') ?? '' };
      out.charDevs.push(current);
    } else if (current !== undefined && path.endsWith('/log') && stack.length === 4) {
      const f = attr('file');
      if (f !== undefined) current.logFile = f;
    } else if (current !== undefined && path.endsWith('/source') && stack.length === 4) {
      const p = attr('path');
      if (p !== undefined) current.sourcePath = p;
    } else if (path === 'domain/qemu:commandline/qemu:arg') {
      const v = attr('value');
      if (v !== undefined) out.qemuArgs.push(v);
    }
  });
  parser.on('text', (t) => {
    if (text.length < 256) text += t;
  });
  parser.on('closetag', () => {
    depth -= 1;
    if (depth >= MAX_NAMED_DEPTH) return;
    const path = stack.join('/');
    if (path === 'domain/name') out.name = text.trim();
    else if (path === 'domain/uuid') out.uuid = text.trim();
    else if (path === 'domain/devices/serial' || path === 'domain/devices/console') current = undefined;
    stack.pop();
  });
  try {
    parser.write(xml).close();
  } catch (e) {
    throw new DomainXmlError(`not well-formed XML: ${(e as Error).message}`, { cause: e });
  }
  if (out.name === '') throw new DomainXmlError('no <domain><name>: not a libvirt domain');
  return out;
}

/**
 * The file that holds the guest's serial console output: the first serial port's `<log file>`, else a
 * `file` serial port's source, else the console's log. Undefined when the domain logs none.
 */
export function consoleLogOf(d: DomainXml): string | undefined {
  const serials = d.charDevs.filter((c) => c.element === 'serial');
  return (
    serials.find((c) => c.logFile !== undefined)?.logFile ??
    serials.find((c) => c.type === 'file' && c.sourcePath !== undefined)?.sourcePath ??
    d.charDevs.find((c) => c.element === 'console' && c.logFile !== undefined)?.logFile
  );
}
