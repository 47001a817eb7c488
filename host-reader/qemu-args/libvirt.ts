import { qemuArgv } from './argv.js';
import type { QemuArgsSpec } from './model.js';

/** The namespace libvirt's QEMU command-line passthrough lives in (libvirt "QEMU command-line passthrough"). */
export const LIBVIRT_QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

/** Escapes text for an XML attribute value (quoted with either quote). Control characters are refused earlier. */
export function xmlEscape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => XML_ESCAPES[c] ?? c);
}

/**
 * `libvirt` format: a `<qemu:commandline>` element with one `<qemu:arg value="..."/>` per argv word, to put
 * inside `<domain>`. libvirt keeps it only when the domain element declares the `qemu` namespace, so the
 * fragment opens with a comment saying so. The values are the QEMU argv words (commas already doubled).
 */
export function renderLibvirt(spec: QemuArgsSpec): string {
  const args = qemuArgv(spec).map((word) => `  <qemu:arg value="${xmlEscape(word)}"/>`);
  return [
    '<!-- eve-diag qemu-args: libvirt domain XML fragment. Put it inside <domain>, which must declare the',
    `     namespace: <domain type="kvm" xmlns:qemu="${LIBVIRT_QEMU_NS}">.`,
    '     Without that declaration libvirt drops qemu:commandline silently. -->',
    '<qemu:commandline>',
    ...args,
    '</qemu:commandline>',
  ].join('\n');
}
