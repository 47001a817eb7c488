import { renderJson, renderShell } from './argv.js';
import { renderLibvirt } from './libvirt.js';
import type { QemuArgsSpec } from './model.js';
import { renderReadconfig } from './readconfig.js';

export const QEMU_ARGS_FORMATS = ['argv', 'json', 'readconfig', 'libvirt'] as const;
export type QemuArgsFormat = (typeof QEMU_ARGS_FORMATS)[number];

/** The flags of `spec` in one of the four formats, as the text to print or write to a file. */
export function renderQemuArgs(spec: QemuArgsSpec, format: QemuArgsFormat): string {
  switch (format) {
    case 'argv':
      return renderShell(spec);
    case 'json':
      return renderJson(spec);
    case 'readconfig':
      return renderReadconfig(spec).text;
    case 'libvirt':
      return renderLibvirt(spec);
  }
}
