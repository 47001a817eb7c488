// The public surface of the QMP client. Import from here, not from the modules behind it.
export {
  QmpClient,
  DEFAULT_TIMEOUT_MS,
  type QmpTarget,
  type QmpState,
  type QmpClientOptions,
  type QmpConnectOptions,
  type QmpExecuteOptions,
  type QmpHmpOptions,
  type QmpWaitEventOptions,
  type QmpStatus,
  type QmpClientStats,
  type QmpGreeting,
  type QmpVersion,
} from './client.js';
export {
  QmpEventListener,
  DEFAULT_EVENT_QUEUE,
  type QmpEvent,
  type QmpEventNames,
  type QmpEventListenerOptions,
  type QmpEventGetOptions,
} from './events.js';
export {
  QmpError,
  QmpConnectError,
  QmpProtocolError,
  QmpCommandError,
  QmpTimeoutError,
  QmpDisconnectedError,
  QmpAbortError,
  type QmpConnectPhase,
  type QmpProtocolErrorReason,
} from './errors.js';
export { LineStream, DEFAULT_MAX_LINE_BYTES, type LineStreamEnd, type LineStreamOptions } from './line-stream.js';
export type { Timers } from './deadline.js';
