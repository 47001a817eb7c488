import type { MediaType } from '../protocol/report-manifest.js';

/**
 * The monitor's contracts (the seed's 3rd iteration): apps (VMs) bound to monitoring scenarios
 * (a probe plus timing), and a diagnostic scenario (collectors) run when a monitoring scenario fails.
 * Vocabulary follows the kubelet prober / KubeVirt probes.
 */

/** How to reach one app VM. Every transport is optional; probes say `unknown` when theirs is missing. */
export interface AppTarget {
  name: string;
  /** QMP unix socket (EVE: /run/hypervisor/kvm/<dom>/qmp). */
  qmp?: string;
  /** Console chardev socket, used only to send (EVE: .../cons, mux=on). */
  console?: string;
  /** Console logfile, read passively (DESIGN fact 8). */
  consoleLog?: string;
  /** The console is a mux chardev: Ctrl-A b sends a BREAK (EVE's console is). */
  consoleMux?: boolean;
  /** Layout JSON of the table loaded in this VM (kernel/agent heartbeat probes). */
  layout?: string;
  /** Host path of the agent's serial/virtio-serial port (PING/PONG responder). */
  agentPort?: string;
  /** Raw heartbeat disk image the agent writes records to (transport 2). */
  heartbeatDisk?: string;
  /** Network address of the app (transport 3). */
  address?: string;
  /** qemu-guest-agent socket, when the VM has one. */
  qga?: string;
  /** Backing file of the VM's ACPI ERST store (`qemu-args --erst`): the guest's pstore panic log. */
  erst?: string;
  /** Unix socket of the VM's gdbstub (`qemu-args --gdb`); attaching stops the VM while connected. */
  gdb?: string;
  /** The guest kernel's System.map, for symbolizing addresses (vCPU stacks). */
  systemMap?: string;
}

/** A probe's outcome: a dead or slow target is `failure`; `unknown` when the probe cannot tell. */
export type ProbeOutcome = 'success' | 'failure' | 'unknown';

export interface ProbeResult {
  outcome: ProbeOutcome;
  /** One line for humans and logs. */
  detail: string;
  /** Structured facts for the classifier and the report (e.g. heartbeat status, run state). */
  evidence?: Record<string, unknown>;
}

/**
 * A probe is a function of (target, timeout): it resolves with success/failure/unknown and never
 * throws for a dead target (a thrown error means the probe code is broken). It must honour `signal`
 * and finish within `timeoutMs`.
 */
export interface Probe {
  readonly kind: string;
  run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult>;
  /**
   * The same run answered at once, when the probe can tell without waiting for anything (a heartbeat
   * read over procmem: one pread, no QMP round trip); undefined when it cannot, and the worker awaits
   * `run`. It must not block: it is the cheap path that lets one monitor watch a thousand VMs
   * (bench/fleet), with no timer, promise or abort signal per poll.
   */
  runSync?(target: AppTarget): ProbeResult | undefined;
  /**
   * How often this probe wants to run, in ms, when that is more often than its scenario's period
   * (asked before each wait). A heartbeat read is cheap and its stall rule already waits for the
   * beat's own bound, so polling it faster only brings the verdict earlier. Undefined: the period.
   */
  intervalMs?(): number | undefined;
  close?(): Promise<void>;
}

/** Timing and thresholds of a monitoring scenario (kubelet names; all in ms). */
export interface ScenarioTiming {
  periodMs: number;
  timeoutMs: number;
  initialDelayMs: number;
  failureThreshold: number;
  successThreshold: number;
}

export const DEFAULT_TIMING: ScenarioTiming = {
  periodMs: 10_000,
  timeoutMs: 1_000,
  initialDelayMs: 0,
  failureThreshold: 3,
  successThreshold: 1,
};

/** An artifact a collector produced (bounded: collectors cap their sizes). */
export interface Artifact {
  /** File name inside the report bundle (no slashes). */
  name: string;
  mediaType: MediaType;
  data: string | Uint8Array;
  /** The collector stopped at its size cap. */
  truncated?: boolean;
}

export interface CollectorResult {
  summary: string;
  artifacts: Artifact[];
  /** false when the collector could not do its job (timeout, transport missing). */
  ok: boolean;
}

/** One step of a diagnostic scenario. */
export interface Collector {
  readonly kind: string;
  collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult>;
}

export { VERDICTS, type Verdict } from '../protocol/report-manifest.js';
