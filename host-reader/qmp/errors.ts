// The error tree of the QMP client: everything below is a `QmpError`.
export { QmpError, excerptOf, EXCERPT_MAX_CHARS } from './errors/qmp-error.js';
export { QmpConnectError, type QmpConnectPhase } from './errors/connect-error.js';
export { QmpProtocolError, type QmpProtocolErrorReason } from './errors/protocol-error.js';
export { QmpCommandError } from './errors/command-error.js';
export { QmpTimeoutError } from './errors/timeout-error.js';
export { QmpDisconnectedError } from './errors/disconnected-error.js';
export { QmpAbortError } from './errors/abort-error.js';
