/**
 * The probes: one module per probe kind, each implementing `Probe` (types.ts). `createProbe` turns a
 * normalized probe spec from the configuration into an instance. One instance serves one (app,
 * scenario) worker and keeps that scenario's state between runs (file offsets, baselines, the
 * heartbeat session); instances that talk QMP share one connection per VM through `QmpLinks`.
 */
import type { Probe } from '../types.js';
import { AgentPingProbe, type AgentPingParams } from './agent-ping.js';
import { ConsoleActiveProbe, type ConsoleActiveParams } from './console-active.js';
import { ConsolePassiveProbe, type ConsolePassiveParams } from './console-passive.js';
import { DiskHeartbeatProbe, type DiskHeartbeatParams } from './disk-heartbeat.js';
import { GuestPingProbe, type GuestPingParams } from './guest-ping.js';
import { HeartbeatProbe, type HeartbeatParams } from './heartbeat.js';
import { HttpProbe, type HttpParams } from './http.js';
import { LogMarksProbe, type LogMarksParams } from './log-marks.js';
import type { QmpLinks } from './qmp-link.js';
import { QmpStatusProbe, type QmpStatusParams } from './qmp-status.js';
import { TcpProbe, type TcpParams } from './tcp.js';

export type ProbeSpec =
  | { type: 'kernel-heartbeat'; params: HeartbeatParams }
  | { type: 'agent-heartbeat'; params: HeartbeatParams }
  | { type: 'qmp-status'; params: QmpStatusParams }
  | { type: 'console-active'; params: ConsoleActiveParams }
  | { type: 'console-passive'; params: ConsolePassiveParams }
  | { type: 'log-marks'; params: LogMarksParams }
  | { type: 'disk-heartbeat'; params: DiskHeartbeatParams }
  | { type: 'tcp'; params: TcpParams }
  | { type: 'http'; params: HttpParams }
  | { type: 'guest-ping'; params: GuestPingParams }
  | { type: 'agent-ping'; params: AgentPingParams };

export type ProbeType = ProbeSpec['type'];

export const PROBE_TYPES: readonly ProbeType[] = [
  'kernel-heartbeat',
  'agent-heartbeat',
  'qmp-status',
  'console-active',
  'console-passive',
  'log-marks',
  'disk-heartbeat',
  'tcp',
  'http',
  'guest-ping',
  'agent-ping',
];

export interface ProbeContext {
  /** The shared QMP connections (one per VM socket). */
  links: QmpLinks;
  /** The scenario's period: the default freshness window of mark and disk probes. */
  periodMs: number;
  /** Monotonic ms (tests inject one). */
  now?: () => number;
  /** Wall-clock ms. */
  wallNow?: () => number;
  /** Runs the heartbeat probes' table discoveries, bounded (HeartbeatProbe); default at once. */
  discoveries?: <T>(fn: () => Promise<T>) => Promise<T>;
}

/** A probe instance for one (app, scenario). Throws RangeError/TypeError for invalid params (a config bug). */
export function createProbe(spec: ProbeSpec, ctx: ProbeContext): Probe {
  const clocks = { periodMs: ctx.periodMs, ...(ctx.now ? { now: ctx.now } : {}), ...(ctx.wallNow ? { wallNow: ctx.wallNow } : {}) };
  switch (spec.type) {
    case 'kernel-heartbeat':
      return new HeartbeatProbe('kernel', ctx.links, spec.params, ctx.now, ctx.discoveries);
    case 'agent-heartbeat':
      return new HeartbeatProbe('agent', ctx.links, spec.params, ctx.now, ctx.discoveries);
    case 'qmp-status':
      return new QmpStatusProbe(ctx.links, spec.params);
    case 'console-active':
      return new ConsoleActiveProbe(spec.params);
    case 'console-passive':
      return new ConsolePassiveProbe(spec.params, clocks);
    case 'log-marks':
      return new LogMarksProbe(spec.params, clocks);
    case 'disk-heartbeat':
      return new DiskHeartbeatProbe(spec.params, clocks);
    case 'tcp':
      return new TcpProbe(spec.params);
    case 'http':
      return new HttpProbe(spec.params);
    case 'guest-ping':
      return new GuestPingProbe(spec.params);
    case 'agent-ping':
      return new AgentPingProbe(spec.params);
    default: {
      const never: never = spec;
      throw new TypeError(`unknown probe type ${JSON.stringify((never as { type: unknown }).type)}`);
    }
  }
}

export { QmpLink, QmpLinks, type QmpLinksOptions, type ConnectHook } from './qmp-link.js';
export { ConsoleActiveProbe, type ConsoleActiveParams, type ConsoleLoginStep } from './console-active.js';
export { ConsolePassiveProbe, DEFAULT_MARK_PATTERN, DEFAULT_PANIC_PATTERN, type ConsolePassiveParams } from './console-passive.js';
export {
  LogMarksProbe,
  kernelEventKind,
  DEFAULT_WITHIN_PERIODS,
  type LogMarksParams,
  type LogMarksSource,
  type KernelEvent,
  type KernelEventKind,
} from './log-marks.js';
export { DiskHeartbeatProbe, type DiskHeartbeatParams } from './disk-heartbeat.js';
export { AgentPingProbe, agentPortAddress, type AgentPingParams } from './agent-ping.js';
export { GuestPingProbe, type GuestPingParams } from './guest-ping.js';
export { HeartbeatProbe, outcomeOf, type HeartbeatParams, type HeartbeatSignal } from './heartbeat.js';
export { HttpProbe, type HttpParams } from './http.js';
export { QmpStatusProbe, QMP_STATUS_EVENTS, type QmpStatusParams, type QmpStatusEvidence, type SeenEvent } from './qmp-status.js';
export { TcpProbe, type TcpParams } from './tcp.js';
