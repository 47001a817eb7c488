// The diagnostic scenario run when a monitoring scenario fails: collectors and the runner.
export {
  connectQmp,
  linkConnector,
  type QmpLease,
  textArtifact,
  jsonArtifact,
  artifactBytes,
  type QmpConnector,
} from './common.js';
export { ConsoleCaptureCollector, type ConsoleCaptureOptions } from './console-capture.js';
export { SysrqCollector, DEFAULT_SYSRQ_KEYS, type SysrqCollectorOptions, type SysrqKeyStatus } from './sysrq.js';
export { QmpStateCollector, DEFAULT_QMP_STATE_COMMANDS, type QmpStateOptions } from './qmp-state.js';
export { HmpRegistersCollector, type HmpRegistersOptions } from './hmp-registers.js';
export { ErstLogCollector, ERST_LOG_MAX_FILE_BYTES, type ErstLogOptions } from './erst-log.js';
export { GdbStacksCollector, type GdbStacksOptions, type GdbStacksReport } from './gdb-stacks.js';
export { NmiCollector, describeNmiOutput, UNKNOWN_NMI_RE, type NmiCollectorOptions } from './nmi.js';
export { MemoryDumpCollector, fixKdumpPhysBase, MEMORY_DUMP_FORMATS, DEFAULT_MAX_DUMP_RAM_BYTES, type MemoryDumpOptions, type MemoryDumpFormat, type PhysBaseFix } from './memory-dump.js';
export { ScreendumpCollector, pngSize, PNG_SIGNATURE, type ScreendumpOptions } from './screendump.js';
export {
  HostStateCollector,
  parseLoadavg,
  parsePressure,
  parseMeminfo,
  parseStat,
  type HostAppTarget,
  type HostStateOptions,
} from './host-state.js';
export type { HostState, QemuProcessState, ThreadState, PressureLine } from '../../protocol/host-state.js';
export {
  runDiagnostics,
  capArtifacts,
  type DiagnosticStep,
  type StepStatus,
  type StepResult,
  type DiagnosticsRun,
  type RunDiagnosticsOptions,
} from './runner.js';
