import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AnalyzeOptions } from '../../controller/analyzers/index.js';
import { hashToken, newToken } from '../../controller/auth.js';
import type { Limits } from '../../controller/limits.js';
import { createController, type Controller } from '../../controller/server.js';
import { openStore } from '../../controller/store/open.js';
import type { Store } from '../../controller/store/store.js';

/** A controller in this process, on a temporary SQLite directory (or the given PostgreSQL), port 0. */
export interface TestController {
  url: string;
  /** The SQLite data directory (undefined on PostgreSQL). */
  data: string | undefined;
  store: Store;
  controller: Controller;
  admin: string;
  /** A token for node `name` (made on first use). */
  nodeToken(name: string): Promise<string>;
  close(): Promise<void>;
}

export async function startController(o: { database?: string; limits?: Partial<Limits>; analyze?: AnalyzeOptions; worker?: boolean; pollMs?: number; tls?: { cert: string; key: string } } = {}): Promise<TestController> {
  const dir = o.database === undefined ? mkdtempSync(join(tmpdir(), 'eve-diag-ctl-')) : undefined;
  const store = await openStore(o.database !== undefined ? { database: o.database } : { data: dir as string });
  const controller = await createController({ store, ...(o.limits ? { limits: o.limits } : {}), ...(o.analyze ? { analyze: o.analyze } : {}), worker: o.worker ?? true, pollMs: o.pollMs ?? 50, ...(o.tls ? { tls: o.tls } : {}) });
  const { url } = await controller.listen('127.0.0.1', 0);
  const admin = newToken();
  await store.addToken(hashToken(admin), 'admin', null, 'test admin');
  const tokens = new Map<string, string>();
  return {
    url,
    data: dir,
    store,
    controller,
    admin,
    async nodeToken(name) {
      let t = tokens.get(name);
      if (t === undefined) {
        t = newToken();
        await store.addToken(hashToken(t), 'node', (await store.nodeId(name)) as number, `test ${name}`);
        tokens.set(name, t);
      }
      return t;
    },
    async close() {
      await controller.close();
      await store.close();
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}
