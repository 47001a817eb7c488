import { readFile } from 'node:fs/promises';
import { DISK_SLOTS_DEFAULT, DISK_SLOTS_MAX } from '../protocol/heartbeat-disk.js';
import type { CheckSpec } from './checks.js';
import { DEFAULT_AGENT_ZONE, normalizeAcpiPath } from '../protocol/acpi-path.js';

/**
 * The agent's configuration: defaults, then `/etc/eve-diag/agent.json`, then command-line flags
 * (flags win). Every value is validated; an error names the field (the JSON key, or the flag) and the
 * value. Times are seconds in the file and on the command line, milliseconds inside.
 *
 * agent.json:
 *   {
 *     "zone": "\\_TZ_.EDGA",     // ACPI path of the agent thermal zone
 *     "period": 1,               // heartbeat period, s (0 = no heartbeat; else 0.1..3600)
 *     "zoneRetry": 30,           // look for a missing zone again after this long, s (1..3600)
 *     "markPeriod": 60,          // s (0 = no marks; else 1..86400)
 *     "syslog": true,            // marks to syslog (logger, else /dev/kmsg)
 *     "console": "/dev/console", // marks to this tty or file; null or "none" = not at all
 *     "responder": null,         // serial port for PING/PONG, e.g. "/dev/virtio-ports/org.lfedge.eve.diag.0"
 *     "disk": null,              // heartbeat disk, e.g. {"path": "/dev/vdb", "slots": 8, "periodSeconds": 1}
 *                                // (slots default 8, period default the heartbeat period); "/dev/vdb" = {"path": ...}
 *     "checks": [                // run before each mark; at most 16
 *       { "name": "web", "http": "http://127.0.0.1:8080/health", "timeout": 2 },
 *       { "name": "db", "tcp": "127.0.0.1:5432" },
 *       { "name": "disk", "command": "test -w /var/lib/app", "timeout": 5 }
 *     ]
 *   }
 */

export const DEFAULT_CONFIG_PATH = '/etc/eve-diag/agent.json';

export interface AgentConfig {
  /** Normalized ACPI path of the agent zone. */
  zone: string;
  /** Heartbeat period; 0 turns the heartbeat off. */
  periodMs: number;
  zoneRetryMs: number;
  /** Mark period; 0 turns marks off. */
  markPeriodMs: number;
  syslog: boolean;
  /** Console path for marks, or null. */
  console: string | null;
  /** Port path for the responder, or null. */
  responder: string | null;
  /** Root of the /sys and /proc trees read (`/`; a fake tree in tests). */
  root: string;
  checks: CheckSpec[];
  /** The heartbeat disk the agent writes records to, or null. */
  disk: DiskConfig | null;
}

export interface DiskConfig {
  /** Raw block device (or file) holding the ring. */
  path: string;
  /** Ring size in 512-byte sectors, 1..4096. */
  slots: number;
  /** Write period; undefined: the heartbeat period (1 s when the heartbeat is off). */
  periodMs?: number;
}

export const DEFAULT_CONFIG: Readonly<AgentConfig> = Object.freeze({
  zone: DEFAULT_AGENT_ZONE,
  periodMs: 1000,
  zoneRetryMs: 30_000,
  markPeriodMs: 60_000,
  syslog: true,
  console: '/dev/console',
  responder: null,
  root: '/',
  checks: [],
  disk: null,
});

export const MAX_CHECKS = 16;
export const DEFAULT_CHECK_TIMEOUT_MS = 5000;
const MAX_CONFIG_BYTES = 64 * 1024;

/** A configuration value (file or flag) is not valid. `field` is the JSON key path or the flag. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly field: string,
    readonly value: unknown,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${field}: ${reason}${value === undefined ? '' : ` (got ${JSON.stringify(value)})`}`, options);
  }
}

/** The keys of agent.json, which are also what the flags set. */
export type FileKey = 'zone' | 'period' | 'zoneRetry' | 'markPeriod' | 'syslog' | 'console' | 'responder' | 'root' | 'checks' | 'disk';
const FILE_KEYS: readonly FileKey[] = ['zone', 'period', 'zoneRetry', 'markPeriod', 'syslog', 'console', 'responder', 'root', 'checks', 'disk'];

type Raw = Partial<Record<FileKey, unknown>>;

function seconds(field: string, v: unknown, min: number, max: number, zeroOff: boolean): number {
  const ok = typeof v === 'number' && Number.isFinite(v) && ((zeroOff && v === 0) || (v >= min && v <= max));
  if (!ok) throw new ConfigError(field, v, `seconds between ${min} and ${max}${zeroOff ? ', or 0 for off' : ''}`);
  return Math.round((v as number) * 1000);
}

/** An absolute path without control characters; null, false or "none" mean off when `nullable`. */
function pathValue(field: string, v: unknown, nullable: boolean): string | null {
  if (nullable && (v === null || v === false || v === 'none')) return null;
  // eslint-disable-next-line no-control-regex
  if (typeof v !== 'string' || !v.startsWith('/') || v.length > 4096 || /[\x00-\x1f]/.test(v)) {
    throw new ConfigError(field, v, `an absolute path${nullable ? ', or null / "none" for off' : ''}`);
  }
  return v;
}

function parseHostPort(field: string, v: unknown): { host: string; port: number } {
  const m = typeof v === 'string' ? /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]{1,253})):([0-9]{1,5})$/.exec(v) : null;
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 1 && port <= 65535)) throw new ConfigError(field, v, 'host:port (IPv6 as [addr]:port), port 1..65535');
  return { host: (m[1] ?? m[2]) as string, port };
}

function checkSpec(field: string, v: unknown, names: Set<string>): CheckSpec {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(field, v, 'an object like {"name": "web", "http": "http://127.0.0.1/"}');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!['name', 'command', 'tcp', 'http', 'timeout'].includes(k)) throw new ConfigError(`${field}.${k}`, undefined, 'unknown key (expected name, command, tcp, http, timeout)');
  }
  const name = o.name;
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,32}$/.test(name)) throw new ConfigError(`${field}.name`, name, '1-32 characters of A-Z a-z 0-9 _ . -');
  if (names.has(name)) throw new ConfigError(`${field}.name`, name, 'used by another check');
  names.add(name);
  const timeoutMs = o.timeout === undefined ? DEFAULT_CHECK_TIMEOUT_MS : seconds(`${field}.timeout`, o.timeout, 0.1, 300, false);
  const kinds = (['command', 'tcp', 'http'] as const).filter((k) => o[k] !== undefined);
  if (kinds.length !== 1) throw new ConfigError(field, undefined, `exactly one of "command", "tcp", "http" (got ${kinds.length === 0 ? 'none' : kinds.join(', ')})`);
  switch (kinds[0]) {
    case 'command': {
      const c = o.command;
      if (typeof c !== 'string' || c.trim() === '' || c.length > 4096 || c.includes('\0')) {
        throw new ConfigError(`${field}.command`, c, 'a non-empty shell command (run with /bin/sh -c), at most 4096 characters');
      }
      return { name, kind: 'command', command: c, timeoutMs };
    }
    case 'tcp':
      return { name, kind: 'tcp', ...parseHostPort(`${field}.tcp`, o.tcp), timeoutMs };
    default: {
      const u = o.http;
      let url: URL | undefined;
      try {
        url = typeof u === 'string' && u.length <= 2048 ? new URL(u) : undefined;
      } catch {
        url = undefined;
      }
      if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
        throw new ConfigError(`${field}.http`, u, 'an http:// or https:// URL');
      }
      return { name, kind: 'http', url: url.toString(), timeoutMs };
    }
  }
}

/** The heartbeat disk's period: its own, else the heartbeat period, else (heartbeat off) 1 s. */
export function diskPeriodMs(c: Pick<AgentConfig, 'disk' | 'periodMs'>): number {
  return c.disk?.periodMs ?? (c.periodMs > 0 ? c.periodMs : DEFAULT_CONFIG.periodMs);
}

/** `disk`: an object, a path (the device with the default ring), or null / "none" for off. */
function diskValue(field: string, v: unknown): DiskConfig | null {
  if (v === null || v === false || v === 'none') return null;
  if (typeof v === 'string') return { path: pathValue(field, v, true) as string, slots: DISK_SLOTS_DEFAULT };
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(field, v, 'an object like {"path": "/dev/vdb"}, a path, or null / "none" for off');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!['path', 'slots', 'periodSeconds'].includes(k)) throw new ConfigError(`${field}.${k}`, undefined, 'unknown key (expected path, slots, periodSeconds)');
  }
  const path = pathValue(`${field}.path`, o.path, false) as string;
  const slots = o.slots ?? DISK_SLOTS_DEFAULT;
  if (typeof slots !== 'number' || !Number.isInteger(slots) || slots < 1 || slots > DISK_SLOTS_MAX) {
    throw new ConfigError(`${field}.slots`, slots, `an integer between 1 and ${DISK_SLOTS_MAX}`);
  }
  const d: DiskConfig = { path, slots };
  if (o.periodSeconds !== undefined) d.periodMs = seconds(`${field}.periodSeconds`, o.periodSeconds, 0.1, 3600, false);
  return d;
}

/**
 * Validates the values of one source. `nameOf` gives the field name errors use (`period` in the file,
 * `--period` on the command line).
 */
export function validateValues(raw: Raw, nameOf: (k: FileKey) => string): Partial<AgentConfig> {
  const out: Partial<AgentConfig> = {};
  for (const k of Object.keys(raw) as FileKey[]) {
    const v = raw[k];
    if (v === undefined) continue;
    const field = nameOf(k);
    switch (k) {
      case 'zone': {
        const z = typeof v === 'string' ? normalizeAcpiPath(v) : undefined;
        if (z === undefined) throw new ConfigError(field, v, 'an ACPI path like \\_TZ_.EDGA');
        out.zone = z;
        break;
      }
      case 'period':
        out.periodMs = seconds(field, v, 0.1, 3600, true);
        break;
      case 'zoneRetry':
        out.zoneRetryMs = seconds(field, v, 1, 3600, false);
        break;
      case 'markPeriod':
        out.markPeriodMs = seconds(field, v, 1, 86_400, true);
        break;
      case 'syslog':
        if (typeof v !== 'boolean') throw new ConfigError(field, v, 'true or false');
        out.syslog = v;
        break;
      case 'console':
        out.console = pathValue(field, v, true);
        break;
      case 'responder':
        out.responder = pathValue(field, v, true);
        break;
      case 'root':
        out.root = pathValue(field, v, false) as string;
        break;
      case 'disk':
        out.disk = diskValue(field, v);
        break;
      case 'checks': {
        if (!Array.isArray(v)) throw new ConfigError(field, v, 'an array of checks');
        if (v.length > MAX_CHECKS) throw new ConfigError(field, undefined, `at most ${MAX_CHECKS} checks (got ${v.length})`);
        const names = new Set<string>();
        out.checks = v.map((c, i) => checkSpec(`${field}[${i}]`, c, names));
        break;
      }
      default:
        throw new ConfigError(field, undefined, `unknown key (expected one of ${FILE_KEYS.join(', ')})`);
    }
  }
  return out;
}

/** Validates the parsed agent.json (`label` is its path, prefixed to every field name). */
export function validateFile(json: unknown, label: string): Partial<AgentConfig> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError(label, undefined, 'must hold one JSON object');
  return validateValues(json as Raw, (k) => `${label}: ${k}`);
}

// ---- command line --------------------------------------------------------------------------------

export interface Flags {
  config?: string;
  /** Values set by flags, as agent.json keys (numbers parsed, not yet validated). */
  values: Raw;
  once: boolean;
  printConfig: boolean;
  version: boolean;
  help: boolean;
}

const VALUE_FLAGS: Record<string, FileKey | 'config'> = {
  '--config': 'config',
  '--zone': 'zone',
  '--period': 'period',
  '--zone-retry': 'zoneRetry',
  '--mark-period': 'markPeriod',
  '--console': 'console',
  '--responder': 'responder',
  '--root': 'root',
  '--disk': 'disk',
};
const FLAG_OF: Partial<Record<FileKey, string>> = Object.fromEntries(
  Object.entries(VALUE_FLAGS).map(([flag, key]) => [key, flag]),
);
FLAG_OF.syslog = '--syslog';

export const USAGE = `usage: eve-diag-agent [options]

Guest agent of eve-diag: reads the agent heartbeat zone of the eve-diag SSDT every period, writes
a mark line to syslog and the console every mark period, optionally answers PING on a serial port.

  --config FILE        configuration (default ${DEFAULT_CONFIG_PATH}; a missing default file is fine)
  --zone PATH          ACPI path of the agent thermal zone (default ${DEFAULT_AGENT_ZONE})
  --period S           heartbeat period in seconds, 0.1..3600, 0 = off (default 1)
  --zone-retry S       look for a missing zone again after S seconds (default 30)
  --mark-period S      mark period in seconds, 1..86400, 0 = off (default 60)
  --syslog, --no-syslog  marks to syslog: logger, else /dev/kmsg (default on)
  --console PATH|none  marks to this console (default /dev/console)
  --responder PATH|none  answer "PING n" with "PONG n uptime=... load=..." on this port
  --disk PATH|none     write a heartbeat record to this raw disk every heartbeat period (8 slots)
  --root DIR           read /sys and /proc under DIR (tests)
  --once               write one mark and exit
  --print-config       print the resolved configuration as JSON and exit
  --version, --help

Flags win over the file. SIGHUP reloads the file, SIGTERM exits.`;

const NUMBER_KEYS: ReadonlySet<string> = new Set(['period', 'zoneRetry', 'markPeriod']);

/** Parses argv (without node and the script). Throws ConfigError naming the flag. */
export function parseFlags(argv: readonly string[]): Flags {
  const flags: Flags = { values: {}, once: false, printConfig: false, version: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    switch (name) {
      case '--once':
        flags.once = true;
        continue;
      case '--print-config':
        flags.printConfig = true;
        continue;
      case '--version':
      case '-V':
        flags.version = true;
        continue;
      case '--help':
      case '-h':
        flags.help = true;
        continue;
      case '--syslog':
      case '--no-syslog':
        flags.values.syslog = name === '--syslog';
        continue;
    }
    const key = VALUE_FLAGS[name];
    if (key === undefined) throw new ConfigError(name, undefined, 'unknown option (see --help)');
    let value: string;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      const next = argv[++i];
      if (next === undefined) throw new ConfigError(name, undefined, 'needs a value');
      value = next;
    }
    if (key === 'config') flags.config = value;
    else if (NUMBER_KEYS.has(key)) {
      if (!/^[0-9]+(\.[0-9]+)?$/.test(value)) throw new ConfigError(name, value, 'seconds, e.g. 1 or 0.5');
      flags.values[key] = Number(value);
    } else flags.values[key] = value;
  }
  // Validate flag values now, so a bad flag fails before anything starts (names the flag).
  validateValues(flags.values, (k) => FLAG_OF[k] ?? k);
  return flags;
}

// ---- loading -------------------------------------------------------------------------------------

export interface LoadedConfig {
  config: AgentConfig;
  /** Where the file part came from, for the start message. */
  source: string;
}

/**
 * Defaults, then the file (flags.config or the default path), then the flags. A missing default
 * file means defaults; a missing `--config` file is an error. Throws ConfigError.
 */
export async function loadConfig(flags: Flags, readText: (path: string) => Promise<string> = (p) => readFile(p, 'utf8')): Promise<LoadedConfig> {
  const path = flags.config ?? DEFAULT_CONFIG_PATH;
  let fromFile: Partial<AgentConfig> = {};
  let source = path;
  let text: string | undefined;
  try {
    text = await readText(path);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (!(code === 'ENOENT' && flags.config === undefined)) {
      throw new ConfigError(flags.config !== undefined ? '--config' : path, flags.config, `cannot read ${path} (${code ?? (e as Error).message})`, { cause: e });
    }
    source = `defaults (no ${path})`;
  }
  if (text !== undefined) {
    if (text.length > MAX_CONFIG_BYTES) throw new ConfigError(path, undefined, `larger than ${MAX_CONFIG_BYTES} bytes`);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new ConfigError(path, undefined, `not valid JSON: ${(e as Error).message}`, { cause: e });
    }
    fromFile = validateFile(json, path);
  }
  const fromFlags = validateValues(flags.values, (k) => FLAG_OF[k] ?? k);
  return { config: { ...DEFAULT_CONFIG, checks: [], ...fromFile, ...fromFlags }, source };
}

/** The configuration as agent.json would say it (seconds), for --print-config and logs. */
export function describeConfig(c: AgentConfig): Record<string, unknown> {
  return {
    zone: c.zone,
    period: c.periodMs / 1000,
    zoneRetry: c.zoneRetryMs / 1000,
    markPeriod: c.markPeriodMs / 1000,
    syslog: c.syslog,
    console: c.console,
    responder: c.responder,
    root: c.root,
    disk: c.disk === null ? null : { path: c.disk.path, slots: c.disk.slots, ...(c.disk.periodMs !== undefined ? { periodSeconds: c.disk.periodMs / 1000 } : {}) },
    checks: c.checks.map((k) => {
      const timeout = k.timeoutMs / 1000;
      switch (k.kind) {
        case 'command':
          return { name: k.name, command: k.command, timeout };
        case 'tcp':
          return { name: k.name, tcp: k.host.includes(':') ? `[${k.host}]:${k.port}` : `${k.host}:${k.port}`, timeout };
        case 'http':
          return { name: k.name, http: k.url, timeout };
      }
    }),
  };
}
