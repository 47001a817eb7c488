// The public surface of qemu-args: a spec of the launch flags eve-diag needs, and four renderers.
export {
  planQemuArgs,
  DEFAULT_IDS,
  ERST_SIZE,
  ID_MAX_CHARS,
  PATH_MAX_BYTES,
  SOCKET_PATH_MAX_BYTES,
  type QemuArgsSpec,
  type QmpSpec,
  type ConsoleSpec,
  type ErstSpec,
  type GdbSpec,
  type AgentPortSpec,
  type QemuPiece,
} from './model.js';
export { QemuArgsError } from './errors.js';
export { qemuArgv, qemuOptValue, renderJson, renderShell, shellArgs, shellQuote } from './argv.js';
export { renderReadconfig, READCONFIG_LINE_MAX_BYTES, type ReadconfigFragment } from './readconfig.js';
export { renderLibvirt, xmlEscape, LIBVIRT_QEMU_NS } from './libvirt.js';
export { renderQemuArgs, QEMU_ARGS_FORMATS, type QemuArgsFormat } from './formats.js';
