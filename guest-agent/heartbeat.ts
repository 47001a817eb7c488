import { errText, type Log } from './log.js';
import type { ZoneLookup } from './sysfs.js';

/**
 * The agent heartbeat: each period, read the agent zone's `temp` (our SSDT's _TMP counts the read in
 * the region the host watches; DESIGN fact 2). The zone is looked up by its ACPI path; when it is
 * missing (the table is not loaded, thermal.off=1, a kernel without ACPI thermal) the heartbeat says
 * so once and looks again every `retryMs`, while the other duties go on.
 *
 * `step(now)` does one period's work and is driven by a Ticker; tests call it with made-up times.
 */

export type HeartbeatStatus = 'starting' | 'ok' | 'missing' | 'error';

export interface HeartbeatOptions {
  /** Normalized ACPI path of the agent zone, e.g. `\_TZ_.EDGA`. */
  zone: string;
  /** How long to wait before looking for a missing zone again. */
  retryMs: number;
}

export interface HeartbeatDeps {
  findZone(zone: string): Promise<ZoneLookup>;
  readTemp(path: string): Promise<string>;
  log: Log;
}

const KEY = 'heartbeat';

export class Heartbeat {
  #temp: string | undefined;
  #nextLookup = -Infinity;
  #status: HeartbeatStatus = 'starting';
  #beats = 0;

  constructor(
    readonly options: HeartbeatOptions,
    private readonly deps: HeartbeatDeps,
  ) {}

  get status(): HeartbeatStatus {
    return this.#status;
  }

  /** Successful reads since this heartbeat was created. */
  get beats(): number {
    return this.#beats;
  }

  /** The `temp` file in use, when the zone is known. */
  get tempPath(): string | undefined {
    return this.#temp;
  }

  async step(now: number): Promise<HeartbeatStatus> {
    const { log } = this.deps;
    if (this.#temp === undefined) {
      if (now < this.#nextLookup) return this.#status;
      const z = await this.deps.findZone(this.options.zone);
      if (!z.found) {
        this.#nextLookup = now + this.options.retryMs;
        this.#status = 'missing';
        log.problem(KEY, `heartbeat paused: ${z.reason}; looking again every ${Math.round(this.options.retryMs / 1000)} s`);
        return this.#status;
      }
      this.#temp = z.temp;
    }
    try {
      await this.deps.readTemp(this.#temp);
    } catch (e) {
      const path = this.#temp;
      this.#temp = undefined;
      this.#nextLookup = now + this.options.retryMs;
      this.#status = 'error';
      log.problem(KEY, `heartbeat paused: cannot read ${path} (${errText(e)}); looking for ${this.options.zone} again every ${Math.round(this.options.retryMs / 1000)} s`);
      return this.#status;
    }
    this.#beats++;
    if (this.#status !== 'ok') {
      if (log.has(KEY)) log.resolved(KEY, `heartbeat resumed: reading ${this.#temp} (${this.options.zone})`);
      else log.info(`heartbeat: reading ${this.#temp} (${this.options.zone})`);
    }
    this.#status = 'ok';
    return this.#status;
  }
}
