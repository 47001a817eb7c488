/**
 * A real PostgreSQL for the tests: Debian's server binaries (postgresql-15), a cluster made by initdb
 * in a temporary directory, started on a free 127.0.0.1 port, stopped by pid (SIGINT, then SIGKILL)
 * and removed afterwards, also when a test fails. PostgreSQL refuses to run as root: as root the
 * cluster belongs to the `postgres` user and its processes run as that user (setpriv).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface Postgres {
  /** postgres://... of a fresh database made for the caller. */
  url: string;
  port: number;
  pid: number;
  /** Another fresh database on the same server. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server (fast shutdown) and starts it again on the same port and data (a restart). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  const dir = versions.map((v) => join(root, v, 'bin')).find((d) => existsSync(join(d, 'initdb')));
  if (dir === undefined) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql-15');
  return dir;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export async function startPostgres(): Promise<Postgres> {
  const bin = binDir();
  const root = process.getuid?.() === 0;
  const ids = root ? spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }) : undefined;
  const uid = ids ? Number(ids.stdout.trim()) : undefined;
  const gid = root ? Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim()) : undefined;
  if (root && !(uid !== undefined && uid > 0)) throw new Error('running as root needs the postgres user (apt-get install postgresql-15 creates it)');
  const as = (cmd: string, args: string[]) => (root ? ['setpriv', ['--reuid', String(uid), '--regid', String(gid), '--clear-groups', '--', cmd, ...args]] : [cmd, args]) as [string, string[]];
  const dir = mkdtempSync(join(tmpdir(), 'eve-diag-pg-'));
  if (root) chownSync(dir, uid as number, gid as number);
  const data = join(dir, 'data');
  const [icmd, iargs] = as(join(bin, 'initdb'), ['-D', data, '-U', 'evediag', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  const init = spawnSync(icmd, iargs, { encoding: 'utf8' });
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.stderr}`);
  }
  const port = await freePort();
  let child: ChildProcess;
  let stderr = '';
  const start = async () => {
    const [cmd, args] = as(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'shared_buffers=64MB']);
    child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(child);
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4000)));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'evediag', database: 'postgres' });
      try {
        await c.connect();
        await c.end();
        return;
      } catch {
        await c.end().catch(() => undefined);
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`PostgreSQL did not start: ${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const stopServer = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGINT'); // fast shutdown
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
    live.delete(child);
  };
  await start();
  let n = 0;
  const createDatabase = async (name: string) => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'evediag', database: 'postgres' });
    await c.connect();
    await c.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`);
    await c.end();
    return `postgres://evediag@127.0.0.1:${port}/${name}`;
  };
  const url = await createDatabase(`t${++n}`);
  return {
    url,
    port,
    get pid() {
      return child.pid ?? -1;
    },
    createDatabase: (name) => createDatabase(name),
    restart: async () => {
      await stopServer();
      await start();
    },
    stop: async () => {
      await stopServer();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
