import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { HttpProbe, type HttpParams } from '../../../monitor/probes/http.js';
import { TcpProbe } from '../../../monitor/probes/tcp.js';
import type { ProbeResult } from '../../../monitor/types.js';

// A self-signed certificate for localhost / 127.0.0.1 (EC P-256, valid 100 years), for the https tests.
const KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOVjN7ICYq8oSw0tU
JwTgErFDqqcJV1DzSh8K+ynmYKyhRANCAARW+oWaLuHZYjJc7rFmbByXqYq3tnpP
z91pzM78+Jz2d+erPLJekmFCeGPy59DUt1dhWBjxxoASSlWvDr1qIyzu
-----END PRIVATE KEY-----
`;
const CERT = `-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUTdpMgAcBEqaTXUVuFR3anMoUxLMwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNjEyMTU0NloYDzIxMjYxMTAy
MTIxNTQ2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARW+oWaLuHZYjJc7rFmbByXqYq3tnpPz91pzM78+Jz2d+erPLJekmFC
eGPy59DUt1dhWBjxxoASSlWvDr1qIyzuo28wbTAdBgNVHQ4EFgQUPdIKJpUK8gCX
eZNPRH3lyyRfBIYwHwYDVR0jBBgwFoAUPdIKJpUK8gCXeZNPRH3lyyRfBIYwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDRwAwRAIgf5RHNNl8gncSik+m4ffawvczA8UNEUkeYJwz3jYI2zECIDAT
s+ioBsGJOaClEGl4u/lcQHawCfWhC50gw1uub8jr
-----END CERTIFICATE-----
`;

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const signal = () => new AbortController().signal;

async function listen<S extends Server | HttpServer>(server: S): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        (server as HttpServer).closeAllConnections?.();
        server.close(() => r());
      }),
  );
  return (server.address() as AddressInfo).port;
}

/** A port nobody listens on: bind one, close it. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('tcp', () => {
  test('a listening port is a success; a refused one a failure; no address unknown', async () => {
    const port = await listen(createServer((s) => s.end()));
    const probe = new TcpProbe({ port });
    const ok = await probe.run({ name: 'vm', address: '127.0.0.1' }, { timeoutMs: 500, signal: signal() });
    expect(ok.outcome).toBe('success');
    expect(ok.evidence).toMatchObject({ host: '127.0.0.1', port });
    const refused = await new TcpProbe({ port: await closedPort() }).run({ name: 'vm', address: '127.0.0.1' }, { timeoutMs: 500, signal: signal() });
    expect(refused.outcome).toBe('failure');
    expect(refused.evidence?.errno).toBe('ECONNREFUSED');
    expect((await probe.run({ name: 'vm' }, { timeoutMs: 100, signal: signal() })).outcome).toBe('unknown');
    // params.host wins over the app's address.
    expect((await new TcpProbe({ host: '127.0.0.1', port }).run({ name: 'vm', address: '192.0.2.1' }, { timeoutMs: 500, signal: signal() })).outcome).toBe('success');
  });

  test('an address that never answers is a failure at the timeout', async () => {
    // 192.0.2.0/24 (TEST-NET-1) is never routed: the SYN goes nowhere (or the host says unreachable at once).
    const t0 = performance.now();
    const r = await new TcpProbe({ port: 9 }).run({ name: 'vm', address: '192.0.2.1' }, { timeoutMs: 200, signal: signal() });
    expect(r.outcome).toBe('failure');
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

describe('http', () => {
  async function server(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
    return listen(createHttpServer(handler));
  }
  const run = (params: HttpParams, timeoutMs = 500, address = '127.0.0.1'): Promise<ProbeResult> =>
    new HttpProbe(params).run({ name: 'vm', address }, { timeoutMs, signal: signal() });

  test('status: 200..399 by default, or the listed ones', async () => {
    const port = await server((req, res) => {
      const code = Number(req.url?.slice(1)) || 200;
      res.writeHead(code, code === 302 ? { location: '/elsewhere' } : {}).end(`status ${code}`);
    });
    expect((await run({ port, path: '/200' })).outcome).toBe('success');
    expect((await run({ port, path: '/302' })).outcome).toBe('success');
    const bad = await run({ port, path: '/503' });
    expect(bad.outcome).toBe('failure');
    expect(bad.detail).toBe(`GET http://127.0.0.1:${port}/503: status 503`);
    expect(bad.evidence).toMatchObject({ status: 503, body: 'status 503' });
    expect((await run({ port, path: '/503', expectStatus: [503] })).outcome).toBe('success');
    expect((await run({ port, path: '/200', expectStatus: [204] })).outcome).toBe('failure');
  });

  test('the body regex, over a bounded read', async () => {
    const port = await server((_req, res) => res.end(`${'x'.repeat(10_000)}{"status":"ok"}`));
    expect((await run({ port, bodyRegex: '"status":"ok"' })).outcome).toBe('success');
    const cut = await run({ port, bodyRegex: '"status":"ok"', maxBodyBytes: 1000 });
    expect(cut.outcome).toBe('failure');
    expect(cut.evidence).toMatchObject({ bodyTruncated: true });
    expect((await run({ port, bodyRegex: 'degraded' })).outcome).toBe('failure');
  });

  test('params.url; headers are sent', async () => {
    let seen: string | undefined;
    const port = await server((req, res) => {
      seen = req.headers['x-probe'] as string | undefined;
      res.end('ok');
    });
    expect((await run({ url: `http://127.0.0.1:${port}/h`, headers: { 'x-probe': 'yes' } }, 500, 'ignored')).outcome).toBe('success');
    expect(seen).toBe('yes');
  });

  test('a server that never answers is a failure at the timeout; refused is a failure; no address unknown', async () => {
    const port = await server(() => undefined);
    const t0 = performance.now();
    const slow = await run({ port }, 200);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(slow.outcome).toBe('failure');
    expect(slow.detail).toBe(`GET http://127.0.0.1:${port}/: timed out after 200 ms`);
    const refused = await run({ port: await closedPort() });
    expect(refused.outcome).toBe('failure');
    expect(refused.evidence?.errno).toBe('ECONNREFUSED');
    expect((await new HttpProbe({ port }).run({ name: 'vm' }, { timeoutMs: 100, signal: signal() })).outcome).toBe('unknown');
  });

  test('a body that stalls after the headers is a failure at the timeout', async () => {
    const port = await server((_req, res) => {
      res.writeHead(200);
      res.write('partial');
    });
    const r = await run({ port, bodyRegex: 'done' }, 200);
    expect(r.outcome).toBe('failure');
    expect(r.evidence).toMatchObject({ status: 200, timedOut: true });
  });

  test('https: a self-signed certificate fails unless insecure', async () => {
    const port = await listen(createHttpsServer({ key: KEY, cert: CERT }, (_req, res) => res.end('ok')) as unknown as HttpServer);
    const strict = await run({ scheme: 'https', port });
    expect(strict.outcome).toBe('failure');
    expect(strict.detail).toMatch(/self[- ]signed/i);
    const insecure = await run({ scheme: 'https', port, insecure: true, bodyRegex: '^ok$' });
    expect(insecure.outcome).toBe('success');
  });
});
