import { resolveQemuPid } from '../host-reader/qemu-pid.js';
import { maxWaitRatio, readThreadWaits, type ThreadWaits } from '../host-reader/vcpu-wait.js';
import type { Clock } from '../util/clock.js';
import type { HostPressure } from './classify.js';
import type { AppConfig } from './config.js';

/**
 * How long an app's QEMU threads waited for a CPU (host-reader/vcpu-wait.ts), read only when a
 * classification is about to say `guest-kernel-hung`: a steady fleet pays nothing for it. With no
 * reading in the last `freshMs`, it reads twice `windowMs` apart (the verdict comes that much later);
 * otherwise it measures from the previous reading, at least `windowMs` back: `prime` takes one when
 * the heartbeat turns late. The QEMU pid is resolved as the heartbeat probe
 * does (its `pid`/`pidFile` params, EVE's pidfile, the QMP socket's owner) and again when the
 * process is gone.
 */
export interface VcpuPressureOptions {
  clock: Clock;
  /** The shortest window, default 1000 ms: a throttled cgroup's wait shows once per CFS period (100 ms by default, up to 1 s). */
  windowMs?: number;
  /** A reading older than this is not a window's start. Default 10 s. */
  freshMs?: number;
  procRoot?: string;
}

interface AppState {
  pid?: number;
  last?: ThreadWaits;
  /** The last answer, given again until a window has passed since its reading. */
  answer?: VcpuPressure;
}

export type VcpuPressure = Pick<HostPressure, 'vcpuWaitRatio' | 'vcpuDetail'>;

export class VcpuPressureSampler {
  readonly #clock: Clock;
  readonly #windowMs: number;
  readonly #freshMs: number;
  readonly #procRoot: string;
  // Keyed by the app object: an app that goes away takes its state with it.
  readonly #apps = new WeakMap<AppConfig, AppState>();

  constructor(o: VcpuPressureOptions) {
    this.#clock = o.clock;
    this.#windowMs = o.windowMs ?? 1000;
    this.#freshMs = o.freshMs ?? 10_000;
    this.#procRoot = o.procRoot ?? '/proc';
  }

  /** Take a reading now, when none is fresh, to start the next sample's window (not awaited; failures are the next sample's). */
  prime(app: AppConfig): void {
    const st = this.#apps.get(app);
    if (st?.last !== undefined && this.#clock.now() - st.last.at <= this.#freshMs) return;
    void (async () => {
      const s = this.#state(app);
      const pid = s.pid ?? (await this.#resolve(app));
      if (pid === undefined) return;
      s.pid = pid;
      s.last = await readThreadWaits(pid, this.#procRoot, () => this.#clock.now());
      s.answer = undefined; // an answer belongs to the window that ended at the previous reading
    })().catch(() => undefined);
  }

  #state(app: AppConfig): AppState {
    let st = this.#apps.get(app);
    if (st === undefined) this.#apps.set(app, (st = {}));
    return st;
  }

  /** The app's most-waiting QEMU thread's share of the window; undefined when it cannot be read (no QMP path, no pid, not ours to read). */
  async sample(app: AppConfig, signal?: AbortSignal): Promise<VcpuPressure | undefined> {
    const st = this.#state(app);
    const pid = st.pid ?? (await this.#resolve(app));
    if (pid === undefined) return undefined;
    const read = () => readThreadWaits(pid, this.#procRoot, () => this.#clock.now());
    let a = st.last;
    // A throttled thread's wait is counted when it next runs (once per CFS period): a window shorter
    // than windowMs can see none of it. Until one has passed, the last answer stands.
    if (a !== undefined && st.answer !== undefined && this.#clock.now() - a.at < this.#windowMs) return st.answer;
    let b: ThreadWaits;
    try {
      if (a === undefined || this.#clock.now() - a.at > this.#freshMs) a = await read();
      const short = this.#windowMs - (this.#clock.now() - a.at);
      if (short > 0) await this.#clock.sleep(short, signal);
      b = await read();
    } catch {
      // The process is gone (a restart): the next sample resolves the pid again.
      st.pid = undefined;
      st.last = undefined;
      return undefined;
    }
    st.pid = pid;
    st.last = b;
    const r = maxWaitRatio(a, b);
    st.answer = r === undefined ? undefined : { vcpuWaitRatio: r.ratio, vcpuDetail: `QEMU pid ${pid} thread ${r.tid} waited for a CPU ${Math.round(r.ratio * 100)}% of ${Math.round(r.windowMs)} ms` };
    return st.answer;
  }

  async #resolve(app: AppConfig): Promise<number | undefined> {
    const qmpPath = app.target.qmp;
    if (qmpPath === undefined) return undefined;
    const hb = app.scenarios.find((s) => s.probe.type === 'kernel-heartbeat')?.probe;
    const params = hb?.type === 'kernel-heartbeat' ? hb.params : {};
    const r = await resolveQemuPid({
      qmpPath,
      procRoot: this.#procRoot,
      ...(params.pid !== undefined ? { pid: params.pid } : {}),
      ...(params.pidFile !== undefined ? { pidFile: params.pidFile } : {}),
    }).catch(() => undefined);
    return r?.pid;
  }
}
