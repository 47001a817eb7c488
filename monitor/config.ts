import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import monitorConfigSchema from '../docs/monitor-config.schema.json' with { type: 'json' };
import { EVE_KVM_DIR, eveDomPaths } from '../host-reader/eve.js';
import { checkDomainRef, LIBVIRT_URI_DEFAULT, LibvirtRefError, type LibvirtDomainRef } from '../host-reader/libvirt/domain-ref.js';
import type { MemoryPath } from '../host-reader/session.js';
import type { ProbeSpec } from './probes/index.js';
import { DEFAULT_LOG_MAX_READ_BYTES, DEFAULT_WITHIN_PERIODS } from './probes/log-marks.js';
import { DEFAULT_MAX_BUNDLE_BYTES } from './report/bundle.js';
import { SPOOL_QUOTA_DEFAULT } from './report/spool.js';
import { DEFAULT_TIMING, type AppTarget, type ScenarioTiming } from './types.js';

/**
 * The monitor's configuration: a YAML (or JSON: YAML 1.2 reads it) file validated against the
 * published JSON Schema `docs/monitor-config.schema.json`, then normalized (defaults applied,
 * seconds turned into milliseconds, paths made absolute against the file's directory).
 *
 * Every problem names the file, the line and the field, in the order they appear:
 *
 *     monitor.yaml:12: apps[0].scenarios[1].periodSeconds: must be >= 1 (got 0)
 *
 * and all of them come at once in one ConfigError. Timing follows the kubelet prober (period 10 s,
 * timeout 1 s, failureThreshold 3, successThreshold 1, initial delay 0).
 */

// ---------------------------------------------------------------------------------------------
// Normalized configuration

export interface CollectorConfig {
  type: string;
  timeoutMs: number;
  maxBytes: number;
  params: Record<string, unknown>;
}

/** The diagnostic scenario: collectors run in order when a monitoring scenario fails. */
export interface DiagnosticsConfig {
  /** No new diagnostic run for the same app within this time after one. */
  cooldownMs: number;
  collectors: CollectorConfig[];
}

export interface ScenarioConfig {
  name: string;
  probe: ProbeSpec;
  timing: ScenarioTiming;
}

export interface AppConfig {
  name: string;
  /** EVE domain whose sockets filled the transports. */
  eveDom?: string;
  target: AppTarget;
  scenarios: ScenarioConfig[];
  diagnostics: DiagnosticsConfig;
  /**
   * A libvirt domain: its QMP bridge, pidfile and console log are bound when the monitor starts
   * (libvirt-apps.ts); `defaultScenarios` when the app named none, so they are chosen then.
   */
  libvirt?: { ref: LibvirtDomainRef; defaultScenarios: boolean };
  /** Named in the file, or found by EVE autodiscovery (discovery.ts). */
  origin: 'config' | 'eve';
}

export interface EveConfig {
  autodiscover: boolean;
  root: string;
  /** Domain names or patterns (`*` matches any run of characters). */
  exclude: string[];
  /** Layout for every discovered VM without its own entry in `layouts`. */
  layout?: string;
  layouts: Record<string, string>;
  /** Diagnostics of discovered VMs. */
  diagnostics: DiagnosticsConfig;
}

export interface MonitorConfig {
  /** The file as given to loadConfig/parseConfig. */
  file: string;
  defaults: { timing: ScenarioTiming; diagnostics: DiagnosticsConfig };
  eve: EveConfig;
  qmp: { connectTimeoutMs: number; holdMs?: number };
  /** The report spool: `quotaBytes` for all bundles, `maxBundleBytes` for one (report/spool.ts). */
  spool: { dir: string; quotaBytes: number; maxBundleBytes: number };
  /** Where reports, verdict events and dropped notices go (monitor/shipper.ts). */
  controller?: { url: string; tokenFile: string; caFile?: string; timeoutMs: number };
  metrics?: { listen: string; host: string; port: number };
  apps: AppConfig[];
}

export const EVE_ROOT_DEFAULT = EVE_KVM_DIR;
export const SPOOL_DIR_DEFAULT = '/var/lib/eve-diag/spool';
export const COOLDOWN_MS_DEFAULT = 300_000;
export const COLLECTOR_TIMEOUT_MS_DEFAULT = 10_000;
export const COLLECTOR_MAX_BYTES_DEFAULT = 1024 * 1024;
export const CONTROLLER_TIMEOUT_MS_DEFAULT = 30_000;
export const QMP_CONNECT_TIMEOUT_MS_DEFAULT = 5000;

// ---------------------------------------------------------------------------------------------
// Errors

export interface ConfigProblem {
  file: string;
  /** 1-based; absent when the problem has no place in the file (unreadable file). */
  line?: number;
  column?: number;
  /** Field path: `apps[0].scenarios[1].periodSeconds`; empty for the whole document. */
  path: string;
  message: string;
}

export function formatProblem(p: ConfigProblem): string {
  const where = p.line !== undefined ? `${p.file}:${p.line}` : p.file;
  return p.path === '' ? `${where}: ${p.message}` : `${where}: ${p.path}: ${p.message}`;
}

/** The configuration is not valid: every problem found, in file order. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly file: string,
    readonly problems: readonly ConfigProblem[],
    options?: { cause?: unknown },
  ) {
    super(
      problems.length === 1
        ? formatProblem(problems[0] as ConfigProblem)
        : `${file}: ${problems.length} problems:\n${problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`,
      options,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Schema

export const SCHEMA_FILE = 'docs/monitor-config.schema.json';
let compiled: ValidateFunction | undefined;

/**
 * The published schema (docs/monitor-config.schema.json), imported into the build: an installed package
 * or a single-file bundle needs no docs/ directory beside it.
 */
export function configSchema(): Record<string, unknown> {
  return monitorConfigSchema as Record<string, unknown>;
}

function schemaValidator(): { validate: ValidateFunction; schema: Record<string, unknown> } {
  compiled ??= new Ajv({ allErrors: true, verbose: true, discriminator: true, strict: true }).compile(configSchema());
  return { validate: compiled, schema: configSchema() };
}

// ---------------------------------------------------------------------------------------------
// Parsing

export interface ParseOptions {
  /** Relative paths in the file are resolved against this. Default: the file's directory. */
  baseDir?: string;
  /** Collector kinds the diagnostics runner knows; when given, other `type`s are errors. */
  collectorKinds?: readonly string[];
}

/** Reads and parses a configuration file. Throws ConfigError (also for an unreadable file). */
export async function loadConfig(file: string, options: ParseOptions = {}): Promise<MonitorConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, [{ file, path: '', message: `cannot read: ${(e as Error).message}` }], { cause: e });
  }
  return parseConfig(text, file, options);
}

/** Parses configuration text; `file` names it in errors and locates relative paths. Pure but for the schema. */
export function parseConfig(text: string, file: string, options: ParseOptions = {}): MonitorConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const problems: ConfigProblem[] = [];
  const lineOf = (offset: number) => lineCounter.linePos(offset);
  for (const e of doc.errors) {
    const pos = lineOf(e.pos[0]);
    problems.push({ file, line: pos.line, column: pos.col, path: '', message: firstLine(e.message) });
  }
  if (problems.length > 0) throw new ConfigError(file, problems);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new ConfigError(file, [{ file, line: 1, path: '', message: (e as Error).message }], { cause: e });
  }
  if (data === null || data === undefined) data = {};

  const locator = new Locator(doc.contents as Node | null, lineOf);
  const { validate } = schemaValidator();
  if (!validate(data)) {
    for (const err of validate.errors ?? []) {
      const p = ajvProblem(err, data, locator, file);
      if (p !== undefined) problems.push(p);
    }
    throw new ConfigError(file, sortProblems(dedupe(problems)));
  }
  const raw = data as RawConfig;
  const ctx: NormalizeContext = {
    file,
    baseDir: options.baseDir ?? dirname(resolve(file)),
    problems,
    locator,
    ...(options.collectorKinds ? { collectorKinds: options.collectorKinds } : {}),
  };
  const config = normalize(raw, ctx);
  if (problems.length > 0) throw new ConfigError(file, sortProblems(dedupe(problems)));
  return config;
}

// ---------------------------------------------------------------------------------------------
// Locating a JSON path in the YAML document

type Seg = string | number;

class Locator {
  constructor(
    private readonly root: Node | null,
    private readonly lineOf: (offset: number) => { line: number; col: number },
  ) {}

  /**
   * The position of the field at `segs`: the line of its key when it is a map entry (so a block
   * value points at `key:`), else the start of the node; for a path that does not exist, the nearest
   * existing ancestor.
   */
  find(segs: readonly Seg[]): { line: number; col: number } | undefined {
    let cur: unknown = this.root;
    let pos: number | undefined = rangeStart(cur);
    for (const seg of segs) {
      if (isMap(cur)) {
        const pair = cur.items.find((p) => keyText(p.key) === String(seg));
        if (pair === undefined) break;
        pos = rangeStart(pair.key) ?? rangeStart(pair.value) ?? pos;
        cur = pair.value;
      } else if (isSeq(cur)) {
        const item: unknown = cur.items[Number(seg)];
        if (item === undefined) break;
        pos = rangeStart(item) ?? pos;
        cur = item;
      } else {
        break;
      }
    }
    return pos === undefined ? undefined : this.lineOf(pos);
  }
}

function rangeStart(n: unknown): number | undefined {
  const r = (n as { range?: [number, number, number] } | null)?.range;
  return Array.isArray(r) ? r[0] : undefined;
}

function keyText(k: unknown): string {
  return isScalar(k) ? String(k.value) : String(k);
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** `apps[0].scenarios[1].periodSeconds` from path segments (numbers are list indexes). */
export function formatPath(segs: readonly Seg[]): string {
  let out = '';
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

/** JSON pointer to segments, with list indexes as numbers (looked up in `data`). */
function pointerSegs(pointer: string, data: unknown): Seg[] {
  if (pointer === '') return [];
  const segs: Seg[] = [];
  let cur: unknown = data;
  for (const raw of pointer.slice(1).split('/')) {
    const s = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur)) {
      segs.push(Number(s));
      cur = cur[Number(s)];
    } else {
      segs.push(s);
      cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[s] : undefined;
    }
  }
  return segs;
}

function valueAt(data: unknown, segs: readonly Seg[]): unknown {
  let cur = data;
  for (const s of segs) cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[String(s)] : undefined;
  return cur;
}

/** `(got ...)` text for a value. */
function got(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

const TYPE_NAMES: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a map',
  array: 'a list',
  null: 'null',
};

function typeName(t: unknown): string {
  const list = Array.isArray(t) ? t : [t];
  return list.map((x) => TYPE_NAMES[String(x)] ?? String(x)).join(' or ');
}

function ajvProblem(e: ErrorObject, data: unknown, loc: Locator, file: string): ConfigProblem | undefined {
  const base = pointerSegs(e.instancePath, data);
  const value = valueAt(data, base);
  const params = e.params as Record<string, unknown>;
  const parent = (e.parentSchema ?? {}) as Record<string, unknown>;
  let segs: Seg[] = base;
  let at: Seg[] = base;
  let message: string;
  switch (e.keyword) {
    case 'required':
      segs = [...base, String(params.missingProperty)];
      message = 'is required';
      break;
    case 'additionalProperties': {
      segs = at = [...base, String(params.additionalProperty)];
      const known = Object.keys((parent.properties as Record<string, unknown> | undefined) ?? {});
      message = known.length > 0 ? `unknown field (expected one of: ${known.join(', ')})` : 'unknown field';
      break;
    }
    case 'type':
      message = `must be ${typeName(params.type)} (got ${got(value)})`;
      break;
    case 'minimum':
      message = `must be >= ${String(params.limit)} (got ${got(value)})`;
      break;
    case 'maximum':
      message = `must be <= ${String(params.limit)} (got ${got(value)})`;
      break;
    case 'exclusiveMinimum':
      message = `must be > ${String(params.limit)} (got ${got(value)})`;
      break;
    case 'exclusiveMaximum':
      message = `must be < ${String(params.limit)} (got ${got(value)})`;
      break;
    case 'enum':
      message = `must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')} (got ${got(value)})`;
      break;
    case 'const':
      message = `must be ${JSON.stringify(params.allowedValue)} (got ${got(value)})`;
      break;
    case 'pattern': {
      const desc = typeof parent.description === 'string' ? parent.description : `a string matching /${String(params.pattern)}/`;
      message = `must be ${desc} (got ${got(value)})`;
      break;
    }
    case 'minLength':
      message = params.limit === 1 ? 'must not be empty' : `must be at least ${String(params.limit)} characters (got ${got(value)})`;
      break;
    case 'minItems':
      message = `must have at least ${String(params.limit)} item(s)`;
      break;
    case 'maxItems':
      message = `must have at most ${String(params.limit)} item(s)`;
      break;
    case 'minProperties':
      message = 'must not be empty';
      break;
    case 'discriminator': {
      const tag = String(params.tag);
      segs = at = [...base, tag];
      if (params.error === 'tag' && (value as Record<string, unknown> | null)?.[tag] === undefined) return undefined; // `required` says it
      const kinds = ((parent.oneOf as { properties?: Record<string, { const?: unknown }> }[] | undefined) ?? [])
        .map((b) => b.properties?.[tag]?.const)
        .filter((x) => x !== undefined)
        .map(String);
      message = `must be one of ${kinds.join(', ')} (got ${got(params.tagValue)})`;
      break;
    }
    case 'oneOf':
      // With the discriminator, a failing branch reports its own errors; this summary adds nothing.
      return undefined;
    default:
      message = e.message ?? e.keyword;
  }
  const pos = loc.find(at);
  return { file, ...(pos ? { line: pos.line, column: pos.col } : {}), path: formatPath(segs), message };
}

function dedupe(ps: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return ps.filter((p) => {
    const k = `${p.path}\0${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function sortProblems(ps: ConfigProblem[]): ConfigProblem[] {
  return [...ps].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
}

// ---------------------------------------------------------------------------------------------
// Normalizing (the schema has checked every shape below)

interface RawTiming {
  periodSeconds?: number;
  timeoutSeconds?: number;
  initialDelaySeconds?: number;
  failureThreshold?: number;
  successThreshold?: number;
}
interface RawCollector {
  type: string;
  timeoutSeconds?: number;
  maxBytes?: number;
  params?: Record<string, unknown>;
}
interface RawDiagnostics {
  cooldownSeconds?: number;
  collectors?: RawCollector[];
}
interface RawScenario extends RawTiming {
  name: string;
  probe: { type: ProbeSpec['type']; params?: Record<string, unknown> };
}
interface RawApp {
  name: string;
  eveDom?: string;
  libvirt?: { domain: string; uri?: string };
  transports?: Partial<Record<keyof AppTarget, string | boolean>>;
  scenarios?: RawScenario[];
  diagnostics?: RawDiagnostics;
}
interface RawConfig {
  version?: 1;
  defaults?: RawTiming & { diagnostics?: RawDiagnostics };
  eve?: { autodiscover?: boolean; root?: string; exclude?: string[]; layout?: string; layouts?: Record<string, string>; diagnostics?: RawDiagnostics };
  qmp?: { holdSeconds?: number; connectTimeoutSeconds?: number };
  spool?: { dir?: string; maxBytes?: number; maxBundleBytes?: number };
  controller?: { url: string; tokenFile: string; caFile?: string; timeoutSeconds?: number };
  metrics?: { listen: string };
  apps?: RawApp[];
}

interface NormalizeContext {
  file: string;
  baseDir: string;
  problems: ConfigProblem[];
  locator: Locator;
  collectorKinds?: readonly string[];
  /** The EVE domain of the app being normalized (log-marks' default newlog path). */
  eveDom?: string;
}

/** Where newlogd writes the app log files it is collecting (pkg/pillar/types/locationconsts.go NewlogCollectDir). */
export const EVE_NEWLOG_COLLECT_DIR = '/persist/newlog/collect';

const ms = (s: number) => Math.round(s * 1000);

function problem(ctx: NormalizeContext, segs: Seg[], message: string): void {
  const pos = ctx.locator.find(segs);
  ctx.problems.push({ file: ctx.file, ...(pos ? { line: pos.line, column: pos.col } : {}), path: formatPath(segs), message });
}

function timingOf(raw: RawTiming, base: ScenarioTiming): ScenarioTiming {
  return {
    periodMs: raw.periodSeconds !== undefined ? ms(raw.periodSeconds) : base.periodMs,
    timeoutMs: raw.timeoutSeconds !== undefined ? ms(raw.timeoutSeconds) : base.timeoutMs,
    initialDelayMs: raw.initialDelaySeconds !== undefined ? ms(raw.initialDelaySeconds) : base.initialDelayMs,
    failureThreshold: raw.failureThreshold ?? base.failureThreshold,
    successThreshold: raw.successThreshold ?? base.successThreshold,
  };
}

function diagnosticsOf(raw: RawDiagnostics | undefined, base: DiagnosticsConfig, segs: Seg[], ctx: NormalizeContext): DiagnosticsConfig {
  if (raw === undefined) return base;
  const collectors =
    raw.collectors === undefined
      ? base.collectors
      : raw.collectors.map((c, i) => {
          if (ctx.collectorKinds !== undefined && !ctx.collectorKinds.includes(c.type)) {
            problem(ctx, [...segs, 'collectors', i, 'type'], `unknown collector (known: ${ctx.collectorKinds.join(', ')}) (got ${got(c.type)})`);
          }
          return {
            type: c.type,
            timeoutMs: c.timeoutSeconds !== undefined ? ms(c.timeoutSeconds) : COLLECTOR_TIMEOUT_MS_DEFAULT,
            maxBytes: c.maxBytes ?? COLLECTOR_MAX_BYTES_DEFAULT,
            params: c.params ?? {},
          };
        });
  return { cooldownMs: raw.cooldownSeconds !== undefined ? ms(raw.cooldownSeconds) : base.cooldownMs, collectors };
}

function checkRegex(ctx: NormalizeContext, segs: Seg[], source: unknown): void {
  if (typeof source !== 'string') return;
  try {
    new RegExp(source);
  } catch (e) {
    problem(ctx, segs, `not a valid regular expression: ${(e as Error).message}`);
  }
}

function probeOf(raw: RawScenario['probe'], segs: Seg[], timing: ScenarioTiming, ctx: NormalizeContext): ProbeSpec {
  const p = raw.params ?? {};
  const at = (k: string): Seg[] => [...segs, 'params', k];
  const path = (v: unknown) => (typeof v === 'string' ? resolve(ctx.baseDir, v) : undefined);
  const defined = <T extends Record<string, unknown>>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  switch (raw.type) {
    case 'kernel-heartbeat':
    case 'agent-heartbeat': {
      if (p.memory === 'file' && p.memPath === undefined) problem(ctx, at('memory'), 'memory "file" needs params.memPath (the memory-backend-file mem-path)');
      for (const k of ['pid', 'pidFile'] as const) {
        if (p[k] !== undefined && p.memory !== undefined && p.memory !== 'auto' && p.memory !== 'procmem') {
          problem(ctx, at(k), `only read with memory "procmem" or "auto" (memory is ${JSON.stringify(p.memory)})`);
        }
      }
      if (p.pid !== undefined && p.pidFile !== undefined) problem(ctx, at('pidFile'), 'give pid or pidFile, not both');
      const late = p.lateAfterPeriods as number | undefined;
      const stall = p.stallAfterPeriods as number | undefined;
      if ((stall ?? 3) <= (late ?? 1.5)) problem(ctx, at(stall !== undefined ? 'stallAfterPeriods' : 'lateAfterPeriods'), `stallAfterPeriods (${stall ?? 3}) must exceed lateAfterPeriods (${late ?? 1.5})`);
      const assess = defined({
        lateAfterPeriods: late,
        stallAfterPeriods: stall,
        agentPeriodMs: p.agentPeriodSeconds !== undefined ? ms(p.agentPeriodSeconds as number) : undefined,
        graceMs: p.graceSeconds !== undefined ? ms(p.graceSeconds as number) : undefined,
        stallSlack: p.stallSlack as number | undefined,
      });
      return {
        type: raw.type,
        params: defined({
          pollMs: p.pollSeconds !== undefined ? ms(p.pollSeconds as number) : undefined,
          memory: p.memory as MemoryPath | undefined,
          memPath: path(p.memPath),
          pid: p.pid as number | undefined,
          pidFile: path(p.pidFile),
          failOn: p.failOn as 'late' | 'stalled' | undefined,
          assess: Object.keys(assess).length > 0 ? assess : undefined,
        }),
      };
    }
    case 'qmp-status':
      return { type: raw.type, params: defined({ events: p.events as string[] | undefined, maxEvents: p.maxEvents as number | undefined }) };
    case 'console-active': {
      checkRegex(ctx, at('expect'), p.expect);
      const login = p.login as { expect?: string; send?: string }[] | undefined;
      login?.forEach((s, i) => checkRegex(ctx, [...at('login'), i, 'expect'], s.expect));
      for (const [k, v] of [['command', p.command], ['newline', p.newline]] as const) {
        if (typeof v === 'string' && v.includes('\x01')) problem(ctx, at(k), 'must not contain Ctrl-A (the mux console escape)');
      }
      login?.forEach((s, i) => {
        if (s.send?.includes('\x01')) problem(ctx, [...at('login'), i, 'send'], 'must not contain Ctrl-A (the mux console escape)');
      });
      return {
        type: raw.type,
        params: defined({
          command: p.command as string | undefined,
          expect: p.expect as string | undefined,
          login,
          newline: p.newline as string | undefined,
          maxBytes: p.maxBytes as number | undefined,
        }),
      };
    }
    case 'console-passive':
      checkRegex(ctx, at('pattern'), p.pattern);
      checkRegex(ctx, at('panicPattern'), p.panicPattern);
      return {
        type: raw.type,
        params: defined({
          pattern: p.pattern as string | undefined,
          maxAgeMs: p.maxAgeSeconds !== undefined ? ms(p.maxAgeSeconds as number) : timing.periodMs,
          maxReadBytes: p.maxReadBytes as number | undefined,
          panicPattern: p.panicPattern as string | undefined,
        }),
      };
    case 'log-marks': {
      checkRegex(ctx, at('pattern'), p.pattern);
      checkRegex(ctx, at('sourcePattern'), p.sourcePattern);
      const source = (p.source as 'console' | 'log-entries' | undefined) ?? 'console';
      if (p.sourcePattern !== undefined && source !== 'log-entries') problem(ctx, at('sourcePattern'), 'only read with source "log-entries" (console lines have no source)');
      let logPath = path(p.path);
      if (typeof p.path === 'string' && /[*?]/.test(dirname(p.path))) problem(ctx, at('path'), `a glob (* or ?) only in the file name, not in a directory (got ${got(p.path)})`);
      if (source === 'log-entries' && logPath === undefined) {
        // An EVE app's console ends up in newlogd's app log file (see monitor/probes/log-marks.ts).
        // EVE names a domain <app uuid>.<restart count>.<app number>; newlogd names the file after the uuid.
        const uuid = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:\.|$)/i.exec(ctx.eveDom ?? '')?.[1];
        if (uuid !== undefined) logPath = `${EVE_NEWLOG_COLLECT_DIR}/app.${uuid.toLowerCase()}.log*`;
        else if (ctx.eveDom !== undefined) problem(ctx, at('path'), `is required with source "log-entries": eveDom ${JSON.stringify(ctx.eveDom)} does not start with an app UUID, so newlogd's file name is not known`);
        else problem(ctx, at('path'), 'is required with source "log-entries" (a file of LogEntry JSON lines; a * in the file name takes the newest match), unless the app has an eveDom');
      }
      const within = (p.withinPeriods as number | undefined) ?? DEFAULT_WITHIN_PERIODS;
      const maxRead = p.maxReadBytes as number | undefined;
      const maxLine = p.maxLineBytes as number | undefined;
      if (maxLine !== undefined && maxLine > (maxRead ?? DEFAULT_LOG_MAX_READ_BYTES)) {
        problem(ctx, at('maxLineBytes'), `must not exceed maxReadBytes (${maxRead ?? DEFAULT_LOG_MAX_READ_BYTES}) (got ${maxLine})`);
      }
      return {
        type: raw.type,
        params: defined({
          source: p.source as 'console' | 'log-entries' | undefined,
          path: logPath,
          pattern: p.pattern as string | undefined,
          sourcePattern: p.sourcePattern as string | undefined,
          withinPeriods: within,
          graceMs: p.graceSeconds !== undefined ? ms(p.graceSeconds as number) : undefined,
          maxReadBytes: maxRead,
          maxLineBytes: maxLine,
        }),
      };
    }
    case 'disk-heartbeat':
      return {
        type: raw.type,
        params: defined({
          slots: p.slots as number | undefined,
          maxAgeMs: p.maxAgeSeconds !== undefined ? ms(p.maxAgeSeconds as number) : timing.periodMs,
        }),
      };
    case 'tcp':
      return { type: raw.type, params: defined({ host: p.host as string | undefined, port: p.port as number }) };
    case 'http':
      checkRegex(ctx, at('bodyRegex'), p.bodyRegex);
      if (typeof p.url === 'string') {
        try {
          new URL(p.url);
        } catch {
          problem(ctx, at('url'), `not a valid URL (got ${got(p.url)})`);
        }
      }
      return {
        type: raw.type,
        params: defined({
          url: p.url as string | undefined,
          scheme: p.scheme as 'http' | 'https' | undefined,
          host: p.host as string | undefined,
          port: p.port as number | undefined,
          path: p.path as string | undefined,
          expectStatus: p.expectStatus as number[] | undefined,
          bodyRegex: p.bodyRegex as string | undefined,
          insecure: p.insecure as boolean | undefined,
          headers: p.headers as Record<string, string> | undefined,
          maxBodyBytes: p.maxBodyBytes as number | undefined,
        }),
      };
    case 'guest-ping':
    case 'agent-ping':
      return { type: raw.type, params: defined({ maxBytes: p.maxBytes as number | undefined }) };
  }
}

const PATH_TRANSPORTS = ['qmp', 'console', 'consoleLog', 'layout', 'agentPort', 'heartbeatDisk', 'qga', 'erst', 'gdb', 'systemMap'] as const;

/** EVE's per-domain paths (host-reader/eve.ts); `cons.log` is our choice (EVE has no fixed one). */
export function eveDomTarget(root: string, dom: string): Pick<AppTarget, 'qmp' | 'console' | 'consoleLog' | 'consoleMux'> {
  const p = eveDomPaths(dom, root);
  return { qmp: p.qmp, console: p.console, consoleLog: p.consoleLog, consoleMux: true };
}

/**
 * A heartbeat scenario decides once: its stall rule already waits for the beat's own bound (the
 * kernel's ring, host-reader/region/assess.ts), so one failing run is the verdict unless the scenario
 * sets its own failureThreshold.
 */
export function heartbeatTiming(timing: ScenarioTiming): ScenarioTiming {
  return { ...timing, failureThreshold: 1 };
}

/**
 * The default bindings of an app that names no scenario (and of an EVE-discovered VM): QEMU's run
 * state when there is QMP, the kernel heartbeat when a layout is known too, the agent's marks in
 * the console logfile when there is one, a PING to the agent when its port is known.
 */
export function defaultScenarios(target: AppTarget, timing: ScenarioTiming): ScenarioConfig[] {
  const out: ScenarioConfig[] = [];
  if (target.qmp !== undefined) {
    out.push({ name: 'qmp-status', probe: { type: 'qmp-status', params: {} }, timing });
    if (target.layout !== undefined) out.push({ name: 'kernel-heartbeat', probe: { type: 'kernel-heartbeat', params: {} }, timing: heartbeatTiming(timing) });
  }
  if (target.consoleLog !== undefined) {
    out.push({ name: 'console-marks', probe: { type: 'console-passive', params: { maxAgeMs: timing.periodMs } }, timing });
  }
  if (target.agentPort !== undefined) out.push({ name: 'agent-ping', probe: { type: 'agent-ping', params: {} }, timing });
  return out;
}

/**
 * The heartbeat scenarios read QEMU's pid from `pidFile` (EVE's `-pidfile`, libvirt's state file)
 * unless they name a pid or pidfile of their own.
 */
export function withPidFile(scenarios: ScenarioConfig[], pidFile: string): ScenarioConfig[] {
  return scenarios.map((s) =>
    (s.probe.type === 'kernel-heartbeat' || s.probe.type === 'agent-heartbeat') && s.probe.params.pid === undefined && s.probe.params.pidFile === undefined
      ? { ...s, probe: { ...s.probe, params: { ...s.probe.params, pidFile } } }
      : s,
  );
}

function normalize(raw: RawConfig, ctx: NormalizeContext): MonitorConfig {
  const abs = (p: string) => resolve(ctx.baseDir, p);
  const d = raw.defaults ?? {};
  const timing = timingOf(d, DEFAULT_TIMING);
  if (timing.timeoutMs > timing.periodMs) {
    problem(ctx, ['defaults', d.timeoutSeconds !== undefined ? 'timeoutSeconds' : 'periodSeconds'], `timeoutSeconds (${timing.timeoutMs / 1000}) must not exceed periodSeconds (${timing.periodMs / 1000})`);
  }
  const baseDiag = diagnosticsOf(d.diagnostics, { cooldownMs: COOLDOWN_MS_DEFAULT, collectors: [] }, ['defaults', 'diagnostics'], ctx);

  const e = raw.eve ?? {};
  const eve: EveConfig = {
    autodiscover: e.autodiscover ?? false,
    root: abs(e.root ?? EVE_ROOT_DEFAULT),
    exclude: e.exclude ?? [],
    layouts: Object.fromEntries(Object.entries(e.layouts ?? {}).map(([k, v]) => [k, abs(v)])),
    diagnostics: diagnosticsOf(e.diagnostics, baseDiag, ['eve', 'diagnostics'], ctx),
    ...(e.layout !== undefined ? { layout: abs(e.layout) } : {}),
  };

  const apps: AppConfig[] = [];
  const names = new Map<string, number>();
  (raw.apps ?? []).forEach((a, i) => {
    const first = names.get(a.name);
    if (first !== undefined) problem(ctx, ['apps', i, 'name'], `duplicate app name ${JSON.stringify(a.name)} (also apps[${first}])`);
    else names.set(a.name, i);
    const t = a.transports ?? {};
    const target: AppTarget = { name: a.name };
    if (a.eveDom !== undefined) {
      Object.assign(target, eveDomTarget(eve.root, a.eveDom));
      const layout = eve.layouts[a.eveDom] ?? eve.layout;
      if (layout !== undefined) target.layout = layout;
    }
    for (const k of PATH_TRANSPORTS) {
      const v = t[k];
      // The agent port may be a TCP chardev (`tcp:HOST:PORT`), not a path.
      if (typeof v === 'string') target[k] = k === 'agentPort' && v.startsWith('tcp:') ? v : abs(v);
    }
    if (typeof t.consoleMux === 'boolean') target.consoleMux = t.consoleMux;
    if (typeof t.address === 'string') target.address = t.address;
    let libvirt: AppConfig['libvirt'];
    if (a.libvirt !== undefined) {
      if (a.eveDom !== undefined) problem(ctx, ['apps', i, 'libvirt'], 'give eveDom or libvirt, not both');
      if (t.qmp !== undefined) problem(ctx, ['apps', i, 'transports', 'qmp'], 'a libvirt app is reached through libvirt: no qmp transport');
      const ref = { domain: a.libvirt.domain, uri: a.libvirt.uri ?? LIBVIRT_URI_DEFAULT };
      try {
        checkDomainRef(ref);
      } catch (e) {
        if (!(e instanceof LibvirtRefError)) throw e;
        problem(ctx, ['apps', i, 'libvirt', e.field], `${e.reason} (got ${got(e.value)})`);
      }
      libvirt = { ref, defaultScenarios: a.scenarios === undefined };
    }

    const scenarioNames = new Map<string, number>();
    const scenarios =
      a.scenarios === undefined
        ? libvirt !== undefined
          ? [] // chosen once the domain's QMP bridge and console log are known (libvirt-apps.ts)
          : defaultScenarios(target, timing)
        : a.scenarios.map((s, j): ScenarioConfig => {
            const segs: Seg[] = ['apps', i, 'scenarios', j];
            const dup = scenarioNames.get(s.name);
            if (dup !== undefined) problem(ctx, [...segs, 'name'], `duplicate scenario name ${JSON.stringify(s.name)} (also scenarios[${dup}])`);
            else scenarioNames.set(s.name, j);
            const heartbeat = s.probe.type === 'kernel-heartbeat' || s.probe.type === 'agent-heartbeat';
            const st = timingOf(s, heartbeat && s.failureThreshold === undefined ? heartbeatTiming(timing) : timing);
            if (st.timeoutMs > st.periodMs) {
              problem(ctx, [...segs, s.timeoutSeconds !== undefined ? 'timeoutSeconds' : 'periodSeconds'], `timeoutSeconds (${st.timeoutMs / 1000}) must not exceed periodSeconds (${st.periodMs / 1000})`);
            }
            const appCtx: NormalizeContext = a.eveDom !== undefined ? { ...ctx, eveDom: a.eveDom } : ctx;
            return { name: s.name, probe: probeOf(s.probe, [...segs, 'probe'], st, appCtx), timing: st };
          });
    apps.push({
      name: a.name,
      ...(a.eveDom !== undefined ? { eveDom: a.eveDom } : {}),
      ...(libvirt !== undefined ? { libvirt } : {}),
      target,
      scenarios,
      diagnostics: diagnosticsOf(a.diagnostics, baseDiag, ['apps', i, 'diagnostics'], ctx),
      origin: 'config',
    });
  });

  if (raw.spool?.maxBundleBytes !== undefined && raw.spool.maxBundleBytes > (raw.spool.maxBytes ?? SPOOL_QUOTA_DEFAULT)) {
    problem(ctx, ['spool', 'maxBundleBytes'], `must not exceed spool.maxBytes (${raw.spool.maxBytes ?? SPOOL_QUOTA_DEFAULT}) (got ${raw.spool.maxBundleBytes})`);
  }
  const q = raw.qmp ?? {};
  const config: MonitorConfig = {
    file: ctx.file,
    defaults: { timing, diagnostics: baseDiag },
    eve,
    qmp: {
      connectTimeoutMs: q.connectTimeoutSeconds !== undefined ? ms(q.connectTimeoutSeconds) : QMP_CONNECT_TIMEOUT_MS_DEFAULT,
      ...(q.holdSeconds !== undefined ? { holdMs: ms(q.holdSeconds) } : {}),
    },
    spool: {
      dir: abs(raw.spool?.dir ?? SPOOL_DIR_DEFAULT),
      quotaBytes: raw.spool?.maxBytes ?? SPOOL_QUOTA_DEFAULT,
      maxBundleBytes: raw.spool?.maxBundleBytes ?? Math.min(DEFAULT_MAX_BUNDLE_BYTES, raw.spool?.maxBytes ?? SPOOL_QUOTA_DEFAULT),
    },
    apps,
  };
  if (raw.controller !== undefined) {
    const c = raw.controller;
    try {
      new URL(c.url);
    } catch {
      problem(ctx, ['controller', 'url'], `not a valid URL (got ${got(c.url)})`);
    }
    config.controller = {
      url: c.url.replace(/\/+$/, ''),
      tokenFile: abs(c.tokenFile),
      ...(c.caFile !== undefined ? { caFile: abs(c.caFile) } : {}),
      timeoutMs: c.timeoutSeconds !== undefined ? ms(c.timeoutSeconds) : CONTROLLER_TIMEOUT_MS_DEFAULT,
    };
  }
  if (raw.metrics !== undefined) {
    const listen = raw.metrics.listen;
    const colon = listen.lastIndexOf(':');
    const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
    const port = Number(listen.slice(colon + 1));
    if (!(port >= 1 && port <= 65535)) problem(ctx, ['metrics', 'listen'], `port must be 1..65535 (got ${got(listen)})`);
    config.metrics = { listen, host, port };
  }
  return config;
}
