import type { Command } from 'commander';
import { existsSync, statSync } from 'node:fs';
import { DEFAULT_PLUGIN_LIMITS, pluginModules, type PluginSpec } from '../controller/analyzers/index.js';
import { hashToken, newToken } from '../controller/auth.js';
import { JobRunner } from '../controller/jobs.js';
import { DEFAULT_LIMITS, type Limits } from '../controller/limits.js';
import { createController } from '../controller/server.js';
import { DEFAULT_DATA_DIR, openStore, type StoreLocation } from '../controller/store/open.js';
import type { ReportFilter, Store } from '../controller/store/store.js';
import { VERDICTS } from '../protocol/report-manifest.js';
import { UsageError } from './usage-error.js';

/**
 * `eve-diag controller ...`: the service that receives the nodes' reports, analyzes them and shows
 * them (serve), its tokens, and a look at what it stored (reports, reanalyze). Every subcommand names
 * its store the same way: `--data DIR` (SQLite, the default) or `--database postgres://...`.
 */

interface StoreFlags {
  data?: string;
  database?: string;
}

export function storeLocation(f: StoreFlags): StoreLocation {
  if (f.data !== undefined && f.database !== undefined) throw new UsageError('--database', f.database, 'give either --data DIR or --database URL, not both');
  if (f.database !== undefined) {
    if (!/^postgres(ql)?:\/\//.test(f.database)) throw new UsageError('--database', f.database, 'a postgres:// or postgresql:// URL');
    return { database: f.database };
  }
  if (f.data === '') throw new UsageError('--data', f.data, 'a directory');
  return { data: f.data ?? DEFAULT_DATA_DIR };
}

async function withStore<T>(f: StoreFlags, fn: (s: Store) => Promise<T>): Promise<T> {
  const where = storeLocation(f);
  let store: Store;
  try {
    store = await openStore(where);
  } catch (e) {
    const flag = where.database !== undefined ? '--database' : '--data';
    throw new UsageError(flag, where.database ?? where.data, `cannot open the store: ${(e as Error).message}`, { cause: e });
  }
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

function parseListen(text: string): { host: string; port: number } {
  const m = /^(.*):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new UsageError('--listen', text, 'HOST:PORT, e.g. 127.0.0.1:8470 (port 0: any free port)');
  return { host: (m[1] as string).replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port };
}

function fileFlag(flag: string, v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (!existsSync(v) || !statSync(v).isFile()) throw new UsageError(flag, v, 'not a readable file');
  return v;
}

/** `--limit key=value` (repeatable) over the defaults. */
export function parseLimits(items: readonly string[]): Partial<Limits> {
  const out: Partial<Limits> = {};
  for (const item of items) {
    const m = /^([A-Za-z]+)=(\d+)$/.exec(item);
    const key = m?.[1] as keyof Limits | undefined;
    if (m === null || key === undefined || !(key in DEFAULT_LIMITS)) {
      throw new UsageError('--limit', item, `KEY=INTEGER with KEY one of ${Object.keys(DEFAULT_LIMITS).join(', ')}`);
    }
    const n = Number(m[2]);
    if (!Number.isSafeInteger(n) || n < 1) throw new UsageError('--limit', item, 'a positive integer');
    out[key] = n;
  }
  return out;
}

interface ServeFlags extends StoreFlags {
  listen: string;
  tlsCert?: string;
  tlsKey?: string;
  clientCa?: string;
  plugins?: string;
  analyzerCommand: string[];
  pluginTimeout: string;
  pluginMemory: string;
  limit: string[];
  worker: boolean;
}

const log = (r: { level: string; msg: string; [k: string]: unknown }) => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...r })}\n`);

export async function serve(f: ServeFlags, signal?: AbortSignal): Promise<void> {
  const listen = parseListen(f.listen);
  if ((f.tlsCert === undefined) !== (f.tlsKey === undefined)) throw new UsageError(f.tlsCert === undefined ? '--tls-cert' : '--tls-key', undefined, 'TLS needs both --tls-cert and --tls-key');
  if (f.clientCa !== undefined && f.tlsCert === undefined) throw new UsageError('--client-ca', f.clientCa, 'client certificates need TLS (--tls-cert and --tls-key)');
  const cert = fileFlag('--tls-cert', f.tlsCert);
  const key = fileFlag('--tls-key', f.tlsKey);
  const clientCa = fileFlag('--client-ca', f.clientCa);
  const limits = parseLimits(f.limit);
  const timeoutS = Number(f.pluginTimeout);
  if (!(timeoutS >= 0.1 && timeoutS <= 600)) throw new UsageError('--plugin-timeout', f.pluginTimeout, 'seconds, 0.1..600');
  const memMb = Number(f.pluginMemory);
  if (!Number.isInteger(memMb) || memMb < 16 || memMb > 4096) throw new UsageError('--plugin-memory', f.pluginMemory, 'megabytes, 16..4096');
  if (f.plugins !== undefined && (!existsSync(f.plugins) || !statSync(f.plugins).isDirectory())) throw new UsageError('--plugins', f.plugins, 'not a directory');
  const plugins: PluginSpec[] = f.plugins === undefined ? [] : await pluginModules(f.plugins);
  for (const c of f.analyzerCommand) {
    const argv = c.split(/\s+/).filter((w) => w !== '');
    if (argv.length === 0) throw new UsageError('--analyzer-command', c, 'a command with its arguments');
    plugins.push({ kind: 'command', name: `command:${(argv[0] as string).split('/').pop()}`, argv });
  }
  const where = storeLocation(f);
  const store = await openStore(where).catch((e: unknown) => {
    throw new UsageError(where.database !== undefined ? '--database' : '--data', where.database ?? where.data, `cannot open the store: ${(e as Error).message}`, { cause: e });
  });
  const controller = await createController({
    store,
    limits,
    log,
    worker: f.worker,
    ...(cert && key ? { tls: { cert, key, ...(clientCa ? { clientCa } : {}) } } : {}),
    analyze: {
      plugins,
      pluginLimits: { ...DEFAULT_PLUGIN_LIMITS, timeoutMs: timeoutS * 1000, maxOldGenerationSizeMb: memMb },
      onPluginError: (name, error) => log({ level: 'warn', msg: 'analyzer plugin failed', plugin: name, error }),
    },
  });
  const bound = await controller.listen(listen.host, listen.port);
  log({ level: 'info', msg: 'controller listening', url: bound.url, store: where.database !== undefined ? 'postgres' : `sqlite:${where.data}`, plugins: plugins.map((p) => p.name), worker: f.worker });
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  signal?.addEventListener('abort', stop, { once: true });
  await new Promise<void>((r) => (ac.signal.aborted ? r() : ac.signal.addEventListener('abort', () => r(), { once: true })));
  process.off('SIGTERM', stop);
  process.off('SIGINT', stop);
  await controller.close();
  await store.close();
  log({ level: 'info', msg: 'controller stopped' });
}

function filterFlags(f: Record<string, unknown>): ReportFilter {
  const out: ReportFilter = {};
  if (typeof f['node'] === 'string') out.node = f['node'];
  if (typeof f['app'] === 'string') out.app = f['app'];
  if (f['verdict'] !== undefined) {
    if (!(VERDICTS as readonly unknown[]).includes(f['verdict'])) throw new UsageError('--verdict', f['verdict'], `one of ${VERDICTS.join(', ')}`);
    out.verdict = f['verdict'] as string;
  }
  for (const k of ['since', 'until'] as const) {
    const v = f[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) throw new UsageError(`--${k}`, v, 'an ISO 8601 time such as 2026-12-01T00:00:00Z');
    out[k] = new Date(v).toISOString();
  }
  if (f['limit'] !== undefined) {
    const n = Number(f['limit']);
    if (!Number.isInteger(n) || n < 1 || n > 500) throw new UsageError('--limit', f['limit'], 'an integer 1..500');
    out.limit = n;
  }
  return out;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function register(program: Command, out: (s: string) => void): void {
  const c = program.command('controller').description('the controller: receives reports from nodes, analyzes them, shows them on a dashboard').exitOverride();
  const storeOpts = (cmd: Command) =>
    cmd
      .option('--data <dir>', `SQLite store in this directory (default ${DEFAULT_DATA_DIR})`)
      .option('--database <url>', 'PostgreSQL store (postgres://user:pass@host:port/db), shared by every instance');

  storeOpts(c.command('serve').description('serve the node API, the read API and the dashboard, and analyze what arrives'))
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8470')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)')
    .option('--tls-key <file>', 'and this key (PEM)')
    .option('--client-ca <file>', 'require client certificates signed by this CA (PEM)')
    .option('--plugins <dir>', 'custom analyzers: .js/.mjs modules exporting analyze(report, context)')
    .option('--analyzer-command <cmd>', 'an external analyzer: report JSON on stdin, findings JSON on stdout (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--plugin-timeout <seconds>', 'time limit of one custom analyzer run', '5')
    .option('--plugin-memory <mb>', 'heap limit of one plugin run (its worker thread)', '64')
    .option('--limit <key=value>', `override a limit (repeatable): ${Object.keys(DEFAULT_LIMITS).join(', ')}`, (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--no-worker', 'do not analyze in this instance (another one does)')
    .action(async (f: ServeFlags) => serve(f));

  const token = c.command('token').description('node and admin tokens (shown once, stored as hashes)').exitOverride();
  storeOpts(token.command('create').description('create a token: --node NAME for a node (it writes and reads only its own reports), --admin for the dashboard and the read API'))
    .option('--node <name>', 'the node the token belongs to')
    .option('--admin', 'an admin token')
    .option('--label <text>', 'a note to tell tokens apart', '')
    .option('--json', 'print {token, role, node} as JSON')
    .action(async (f: StoreFlags & { node?: string; admin?: boolean; label: string; json?: boolean }) => {
      if ((f.node === undefined) === (f.admin !== true)) throw new UsageError('--node', f.node, 'give exactly one of --node NAME or --admin');
      if (f.node !== undefined && !NAME_RE.test(f.node)) throw new UsageError('--node', f.node, "a node name: letters, digits, . _ : - (at most 128)");
      if (f.label.length > 200) throw new UsageError('--label', f.label, 'at most 200 characters');
      const t = newToken();
      await withStore(f, async (s) => {
        const nodeId = f.node === undefined ? null : ((await s.nodeId(f.node)) as number);
        await s.addToken(hashToken(t), f.admin === true ? 'admin' : 'node', nodeId, f.label);
      });
      if (f.json === true) out(JSON.stringify({ token: t, role: f.admin === true ? 'admin' : 'node', node: f.node ?? null, hashPrefix: hashToken(t).slice(0, 12) }));
      else out(`${t}\n(shown once: the controller keeps only its hash, prefix ${hashToken(t).slice(0, 12)})`);
    });
  storeOpts(token.command('list').description('the tokens: hash prefix, role, node, label, revoked'))
    .option('--json', 'JSON')
    .action(async (f: StoreFlags & { json?: boolean }) => {
      const list = await withStore(f, (s) => s.tokens());
      out(f.json === true ? JSON.stringify(list) : list.map((t) => `${t.hashPrefix}  ${t.role.padEnd(5)}  ${(t.node ?? '-').padEnd(24)}  ${t.revoked ? 'revoked' : 'active '}  ${t.label}`).join('\n') || 'no tokens');
    });
  storeOpts(token.command('revoke').description('revoke the tokens whose hash starts with PREFIX').argument('<prefix>', 'at least 8 hex digits of the hash (token list shows them)')).action(
    async (prefix: string, f: StoreFlags) => {
      if (!/^[0-9a-f]{8,64}$/.test(prefix)) throw new UsageError('PREFIX', prefix, '8 to 64 hex digits of a token hash');
      const n = await withStore(f, (s) => s.revokeToken(prefix));
      out(`${n} token(s) revoked`);
    },
  );
  for (const t of token.commands) t.exitOverride();

  const filters = (cmd: Command) =>
    cmd
      .option('--node <name>', 'only this node')
      .option('--app <name>', 'only this app')
      .option('--verdict <verdict>', `only this verdict (${VERDICTS.join(', ')})`)
      .option('--since <time>', 'created at or after (ISO 8601)')
      .option('--until <time>', 'created before (ISO 8601)');

  filters(storeOpts(c.command('reports').description('the stored reports, newest first')))
    .option('--limit <n>', 'at most n (1..500)', '50')
    .option('--json', 'JSON')
    .action(async (f: StoreFlags & Record<string, unknown>) => {
      const filter = filterFlags(f);
      const rows = await withStore(f, (s) => s.listReports(filter));
      if (f['json'] === true) return out(JSON.stringify(rows));
      out(
        rows.length === 0
          ? 'no reports'
          : rows.map((r) => `${String(r.key).padStart(6)}  ${r.createdAt}  ${r.node}/${r.app}  ${r.verdict}  ${r.findings} finding(s)${r.worstSeverity ? ` (${r.worstSeverity})` : ''}  ${r.reason}`).join('\n'),
      );
    });

  filters(storeOpts(c.command('reanalyze').description('run the analyzers again over stored reports (queued; --wait runs them here)')))
    .option('--logs', "also every app's logs")
    .option('--wait', 'analyze the queue in this process until it is empty')
    .option('--plugins <dir>', 'with --wait: custom analyzers')
    .option('--json', 'JSON')
    .action(async (f: StoreFlags & Record<string, unknown>) => {
      const filter = filterFlags(f);
      await withStore(f, async (s) => {
        const queued = await s.enqueueReanalysis(filter, f['logs'] === true);
        let analyzed = 0;
        if (f['wait'] === true) {
          const plugins = typeof f['plugins'] === 'string' ? await pluginModules(f['plugins']) : [];
          const runner = new JobRunner({ store: s, analyze: { plugins } });
          while (await runner.runOne()) analyzed++;
        }
        out(f['json'] === true ? JSON.stringify({ queued, analyzed }) : `${queued} analysis job(s) queued${f['wait'] === true ? `, ${analyzed} run` : ''}`);
      });
    });
  for (const sub of c.commands) sub.exitOverride();
}
