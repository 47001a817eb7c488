import { QmpError } from './qmp-error.js';

/**
 * The connection is gone: it dropped, the peer broke the protocol, or `close()` was called, while a
 * command was waiting for its reply (or one was issued on a closed client). `cause` says why the
 * connection ended (a `QmpProtocolError`, a socket error), and is absent after a plain `close()` or a
 * clean end of stream.
 */
export class QmpDisconnectedError extends QmpError {
  override name = 'QmpDisconnectedError';
  /** The command that was waiting, if any. */
  readonly command: string | undefined;

  constructor(message: string, init?: { command?: string; cause?: unknown }) {
    super(init?.command === undefined ? message : `QMP command ${init.command}: ${message}`, {
      cause: init?.cause,
    });
    this.command = init?.command;
  }
}
