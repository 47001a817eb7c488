import { QmpError } from './qmp-error.js';

/** Which step of session establishment failed. */
export type QmpConnectPhase = 'socket' | 'greeting' | 'negotiation';

/**
 * The session could not be established: the socket did not connect, the greeting did not come or
 * was not QMP, or `qmp_capabilities` failed. `cause` holds the underlying error (an errno error, a
 * `QmpTimeoutError`, a `QmpProtocolError`, a `QmpCommandError`, a `QmpDisconnectedError`).
 */
export class QmpConnectError extends QmpError {
  override name = 'QmpConnectError';
  /** The socket path, or `host:port`. */
  readonly target: string;
  readonly phase: QmpConnectPhase;

  constructor(target: string, phase: QmpConnectPhase, cause: unknown) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(`QMP connect to ${target} failed (${phase}): ${detail}`, { cause });
    this.target = target;
    this.phase = phase;
  }
}
