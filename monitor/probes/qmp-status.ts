import type { QmpEvent } from '../../host-reader/qmp/index.js';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { deadline, deadlineResult, errnoCode, errorText, failure, success, unknown } from './common.js';
import type { QmpLink, QmpLinks } from './qmp-link.js';

/**
 * `qmp-status`: QEMU's run state (`query-status`), what EVE itself polls. `running` is a success;
 * any other RunState (paused, inmigrate, postmigrate, shutdown, guest-panicked, ...) is a failure
 * whose evidence carries it. The probe also listens to the events that explain a state change and
 * reports those seen since its previous run (a bounded list). A GUEST_PANICKED stays in the evidence
 * (`panic`) until a RESET follows it: the panic is the cause even after QEMU moved on to `shutdown`.
 */

export const QMP_STATUS_EVENTS = ['GUEST_PANICKED', 'STOP', 'RESET', 'SHUTDOWN', 'WATCHDOG'] as const;

export interface QmpStatusParams {
  /** Events to report. Default QMP_STATUS_EVENTS. */
  events?: readonly string[];
  /** Most events kept between two runs (the oldest are dropped and counted). Default 16. */
  maxEvents?: number;
}

export interface SeenEvent {
  event: string;
  data: Record<string, unknown>;
  /** QEMU's timestamp (host wall clock, ms), when QEMU gave one. */
  wallMs?: number;
}

export interface QmpStatusEvidence {
  status: string;
  running: boolean;
  events: SeenEvent[];
  droppedEvents: number;
  /** The last GUEST_PANICKED not followed by a RESET. */
  panic?: SeenEvent;
  qmp: string;
}

export class QmpStatusProbe implements Probe {
  readonly kind = 'qmp-status';
  readonly #events: readonly string[];
  readonly #maxEvents: number;
  #link: QmpLink | undefined;
  #unhook: (() => void) | undefined;
  #seen: SeenEvent[] = [];
  #dropped = 0;
  #panic: SeenEvent | undefined;

  constructor(
    private readonly links: QmpLinks,
    params: QmpStatusParams = {},
  ) {
    this.#events = params.events ?? QMP_STATUS_EVENTS;
    this.#maxEvents = params.maxEvents ?? 16;
    if (this.#events.length === 0) throw new RangeError('events: at least one event name');
    if (!Number.isSafeInteger(this.#maxEvents) || this.#maxEvents < 1) throw new RangeError(`maxEvents: an integer >= 1 (got ${this.#maxEvents})`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    if (target.qmp === undefined) return unknown('no QMP socket configured');
    const link = this.#bind(target.qmp);
    const d = deadline(opts.signal, opts.timeoutMs);
    try {
      const client = await link.client(d.signal);
      const st = await client.queryStatus({ signal: d.signal });
      const evidence: QmpStatusEvidence = {
        status: st.status,
        running: st.running,
        events: this.#seen.splice(0),
        droppedEvents: this.#dropped,
        qmp: target.qmp,
        ...(this.#panic !== undefined ? { panic: this.#panic } : {}),
      };
      this.#dropped = 0;
      const ev = evidence.events.length > 0 ? `; events: ${evidence.events.map((e) => e.event).join(', ')}` : '';
      return st.status === 'running' && st.running
        ? success(`VM is running${ev}`, { ...evidence })
        : failure(`VM is ${st.status}${ev}`, { ...evidence });
    } catch (e) {
      if (d.signal.aborted) {
        // A command left without its reply may leave QEMU busy; the link stays (replies are routed by id).
        return deadlineResult(d, opts.timeoutMs, 'query-status', { qmp: target.qmp });
      }
      const code = errnoCode(e);
      // ENOENT / ECONNREFUSED: no QEMU listens there (the VM is not running): a dead target, a failure.
      return failure(`QMP ${target.qmp}: ${errorText(e)}`, { qmp: target.qmp, qmpError: errorText(e), ...(code ? { errno: code } : {}) });
    } finally {
      d.dispose();
    }
  }

  async close(): Promise<void> {
    this.#unhook?.();
    this.#unhook = undefined;
    const link = this.#link;
    this.#link = undefined;
    if (link !== undefined) await this.links.release(link);
  }

  #bind(path: string): QmpLink {
    if (this.#link?.path === path) return this.#link;
    this.#unhook?.();
    // The old link is done with: a failure to close it must not become an unhandled rejection.
    if (this.#link !== undefined) this.links.release(this.#link).catch(() => undefined);
    const link = this.links.acquire(path);
    this.#link = link;
    this.#unhook = link.onConnect((client) => client.on([...this.#events, 'RESET', 'GUEST_PANICKED'], (e) => this.#onEvent(e)));
    return link;
  }

  #onEvent(e: QmpEvent): void {
    const seen: SeenEvent = { event: e.event, data: { ...e.data } };
    if (e.timestamp !== undefined) seen.wallMs = e.timestamp.seconds * 1000 + Math.floor(e.timestamp.microseconds / 1000);
    if (e.event === 'GUEST_PANICKED') this.#panic = seen;
    if (e.event === 'RESET') this.#panic = undefined;
    if (!this.#events.includes(e.event)) return;
    this.#seen.push(seen);
    if (this.#seen.length > this.#maxEvents) {
      this.#seen.shift();
      this.#dropped++;
    }
  }
}
