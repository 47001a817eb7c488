import { QmpError } from './qmp-error.js';

/**
 * QEMU answered a command with `{"error": {"class": ..., "desc": ...}}`. Keeps the command that was sent.
 * The common classes are `GenericError`, `CommandNotFound`, `DeviceNotActive`, `DeviceNotFound`,
 * `KVMMissingCap` (QAPI `QapiErrorClass`).
 */
export class QmpCommandError extends QmpError {
  override name = 'QmpCommandError';
  /** QEMU's error class, e.g. `CommandNotFound`. */
  readonly errorClass: string;
  /** QEMU's human-readable description. */
  readonly desc: string;
  readonly command: string;
  readonly args: Readonly<Record<string, unknown>> | undefined;
  /** The `id` the command was sent with. */
  readonly id: string;

  constructor(init: {
    errorClass: string;
    desc: string;
    command: string;
    args: Readonly<Record<string, unknown>> | undefined;
    id: string;
  }) {
    super(`QMP command ${init.command} failed: ${init.errorClass}: ${init.desc}`);
    this.errorClass = init.errorClass;
    this.desc = init.desc;
    this.command = init.command;
    this.args = init.args;
    this.id = init.id;
  }
}
