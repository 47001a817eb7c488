/**
 * What one request, one artifact and one node may send the controller. Every limit is enforced before
 * anything is stored; over it the answer is 413 (too large) or 429 (too often, with Retry-After) and
 * a message naming the limit.
 */
export interface Limits {
  /** A manifest (POST /reports). */
  maxManifestBytes: number;
  /** One artifact, as stored (uncompressed). */
  maxArtifactBytes: number;
  /** All artifacts of one report. */
  maxReportBytes: number;
  /** Everything one node has stored. */
  maxNodeBytes: number;
  /** New reports per node per hour. */
  maxReportsPerHour: number;
  /** Requests per token per second (a burst of 4x is allowed). */
  maxRequestsPerSecond: number;
  /** A log request's body as sent (gzip or not), and inflated. */
  maxLogBodyBytes: number;
  maxLogInflatedBytes: number;
  maxLogLinesPerRequest: number;
  /** Log lines kept per app (the oldest go). */
  keepLogLinesPerApp: number;
  /** Events and dropped notices per request body. */
  maxSmallBodyBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxManifestBytes: 1024 * 1024,
  maxArtifactBytes: 16 * 1024 * 1024,
  maxReportBytes: 64 * 1024 * 1024,
  maxNodeBytes: 2 * 1024 * 1024 * 1024,
  maxReportsPerHour: 600,
  maxRequestsPerSecond: 50,
  maxLogBodyBytes: 1024 * 1024,
  maxLogInflatedBytes: 16 * 1024 * 1024,
  maxLogLinesPerRequest: 10_000,
  keepLogLinesPerApp: 20_000,
  maxSmallBodyBytes: 256 * 1024,
};

/** A token bucket per key: `rate` per second, bursts up to `burst`. */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    readonly rate: number,
    readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes one token; returns 0 when allowed, else the seconds until the next one. */
  take(key: string): number {
    const t = this.now();
    let b = this.#buckets.get(key);
    if (b === undefined) {
      if (this.#buckets.size > 100_000) this.#buckets.clear(); // bounded, whoever calls
      b = { tokens: this.burst, at: t };
      this.#buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.rate);
    b.at = t;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - b.tokens) / this.rate);
  }
}
