// The public surface of the console transport: read the chardev logfile passively, send only when needed.
export { realClock, type Clock } from '../../util/clock.js';
export {
  ConsoleError,
  ConsoleConnectError,
  ConsoleTimeoutError,
  ConsoleAbortError,
  ConsoleBusyError,
  SysrqError,
} from './errors.js';
export {
  readLogfile,
  tailLogfile,
  logfileSize,
  LogfileTail,
  DEFAULT_MAX_READ_BYTES,
  type LogRead,
  type ReadLogfileOptions,
  type LogfileTailOptions,
  type WaitForOptions,
  type WaitQuietOptions,
  type LogMatch,
} from './logfile-reader.js';
export { sanitizeText, sanitizeLine, DEFAULT_SANITIZE_MAX_BYTES, type SanitizeOptions, type Sanitized } from './sanitize.js';
export { sendToConsole, type ConsoleWrite, type SendOptions, type SendResult } from './sender.js';
export {
  SAFE_SYSRQ_KEYS,
  SYSRQ_ACTION_MESSAGES,
  SYSRQ_HEADER,
  SYSRQ_DISABLED,
  MUX_ESCAPE,
  checkSysrqKey,
  sysrqSendKeyArgs,
  sysrqBySendKey,
  sysrqByBreak,
  findConsoleChardev,
  type SysrqMethod,
  type SendKeyOptions,
  type BreakOptions,
  type ConsoleChardev,
} from './sysrq.js';
