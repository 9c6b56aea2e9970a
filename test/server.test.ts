/**
 * `coffer serve` as a real child process over a fresh data directory, and the drive's
 * http:// backend against it: the backend conformance suite, accounts kept apart, keys that
 * try to escape, size limits, quotas, and metrics behind the admin token.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CofferError } from '../src/errors.js';
import { HttpBackend } from '../src/remote/http-backend.js';
import { openBackend } from '../src/remote/open-backend.js';
import { RetryingBackend } from '../src/remote/retrying-backend.js';
import { cofferOk, Workspace } from './helpers/drive.js';
import { failure, remoteConformance } from './helpers/remote-conformance.js';
import { startServe, type ServeProcess } from './helpers/serve.js';

let dir: string;
let data: string;
let server: ServeProcess | undefined;
let base: string;
const tokens: Record<'a' | 'b' | 'small', string> = { a: '', b: '', small: '' };
const ids: Record<'a' | 'b' | 'small', string> = { a: '', b: '', small: '' };
const MAX_OBJECT = 256 * 1024;
const ADMIN_TOKEN = `admin-${randomBytes(16).toString('hex')}`;

async function addAccount(name: string, extra: string[] = []): Promise<{ id: string; token: string }> {
  const { stdout } = await cofferOk(['serve', 'account', 'add', name, '--data', data, '--json', ...extra]);
  return JSON.parse(stdout) as { id: string; token: string };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'coffer-serve-'));
  data = join(dir, 'data');
  ({ id: ids.a, token: tokens.a } = await addAccount('alice'));
  ({ id: ids.b, token: tokens.b } = await addAccount('bob'));
  const adminTokenFile = join(dir, 'admin-token');
  writeFileSync(adminTokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
  server = await startServe([
    '--listen', '127.0.0.1:0', '--data', data, '--max-object-size', String(MAX_OBJECT),
    '--admin-token-file', adminTokenFile, '--metrics-listen', '127.0.0.1:0',
  ]);
  base = server.base;
  // An account added while the server runs is picked up without a restart.
  ({ id: ids.small, token: tokens.small } = await addAccount('small', ['--quota-bytes', '1000', '--quota-objects', '3']));
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function backend(token = tokens.a, prefix = `v-${randomBytes(4).toString('hex')}`): HttpBackend {
  return new HttpBackend({ url: `${base}/${prefix}/`, token });
}

/** One raw request, so tests can send what the backend never would. */
function raw(method: string, path: string, options: { token?: string; body?: Buffer; headers?: Record<string, string>; base?: string } = {}) {
  return new Promise<{ status: number; body: string; json: { error?: { code: string; message: string } } | undefined }>((resolvePromise, reject) => {
    const url = new URL(options.base ?? base);
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        headers: { ...(options.token ? { authorization: `Bearer ${options.token}` } : {}), ...options.headers },
      },
      (res) => {
        const pieces: Buffer[] = [];
        res.on('data', (d: Buffer) => pieces.push(d));
        res.on('end', () => {
          const body = Buffer.concat(pieces).toString('utf8');
          let json;
          try {
            json = JSON.parse(body);
          } catch {
            json = undefined;
          }
          resolvePromise({ status: res.statusCode!, body, json });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

remoteConformance('http (coffer serve)', async () => backend());

remoteConformance('http:// URL through openBackend (retrying, token from COFFER_TOKEN)', async () =>
  openBackend(`${base}/u-${randomBytes(4).toString('hex')}/`, { env: { COFFER_TOKEN: tokens.a } }),
);

describe('coffer serve', () => {
  it('answers health checks without a token, and metrics in Prometheus text format with the admin token', async () => {
    expect((await raw('GET', '/healthz')).status).toBe(200);
    const metrics = await raw('GET', '/metrics', { token: ADMIN_TOKEN });
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^# TYPE coffer_serve_requests_total counter$/m);
  });

  it('refuses /metrics without the admin token, with a wrong one or an account\'s, with 401 saying how to get them', async () => {
    for (const token of [undefined, 'wrong', ADMIN_TOKEN.slice(0, -1), `${ADMIN_TOKEN}x`, tokens.a]) {
      const answer = await raw('GET', '/metrics', token === undefined ? {} : { token });
      expect([token, answer.status, answer.json?.error?.code]).toEqual([token, 401, 'UNAUTHORIZED']);
      expect(answer.json?.error?.message).toMatch(/Authorization: Bearer <admin token>.*--admin-token-file/);
      expect(answer.body).not.toContain('coffer_serve');
    }
    expect((await raw('GET', '/metrics', { token: ADMIN_TOKEN })).status).toBe(200);
  });

  it('serves /metrics and /healthz without a token on --metrics-listen, and nothing else there', async () => {
    const metricsBase = server!.metricsBase!;
    expect(metricsBase).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(metricsBase).not.toBe(base);
    const metrics = await raw('GET', '/metrics', { base: metricsBase });
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^# TYPE coffer_serve_requests_total counter$/m);
    expect((await raw('GET', '/healthz', { base: metricsBase })).json).toEqual({ ok: true });
    for (const [method, path] of [['GET', '/v1/usage'], ['GET', '/v1/objects/chunks/x'], ['PUT', '/v1/objects/chunks/x'], ['GET', '/v1/objects']]) {
      const answer = await raw(method!, path!, { base: metricsBase, token: tokens.a, ...(method === 'PUT' ? { body: Buffer.from('x') } : {}) });
      expect([method, path, answer.status, answer.json?.error?.code]).toEqual([method, path, 404, 'NOT_FOUND']);
    }
  });

  it('refuses requests without a token or with a wrong one', async () => {
    for (const token of [undefined, 'cft_wrong']) {
      const answer = await raw('GET', '/v1/objects/chunks/x', token ? { token } : {});
      expect(answer.status).toBe(401);
      expect(answer.json?.error?.code).toBe('UNAUTHORIZED');
    }
    const err = await failure(backend('cft_wrong').get('x'));
    expect(err.code).toBe('REMOTE_UNAUTHORIZED');
    expect(err.message).toMatch(/UNAUTHORIZED.*COFFER_TOKEN/);
    expect(() => openBackend(`${base}/`, { env: {} })).toThrow(/COFFER_TOKEN/);
    expect(openBackend(`${base}/`, { env: {}, token: tokens.a })).toBeInstanceOf(RetryingBackend);
  });

  it('keeps accounts apart: the same key under another account is NOT_FOUND and lists are separate', async () => {
    const alice = backend(tokens.a, 'shared');
    const bob = backend(tokens.b, 'shared');
    await alice.put('manifests/00000000000000000001', Buffer.from('alice'));
    expect((await failure(bob.get('manifests/00000000000000000001'))).code).toBe('REMOTE_NOT_FOUND');
    expect((await failure(bob.head('manifests/00000000000000000001'))).code).toBe('REMOTE_NOT_FOUND');
    expect(await bob.list('')).toEqual([]);
    // Bob's create of the same key is his own object and does not touch Alice's.
    await bob.createExclusive('manifests/00000000000000000001', Buffer.from('bob'));
    await bob.put('manifests/00000000000000000001', Buffer.from('bob again'));
    await bob.delete('manifests/00000000000000000001');
    expect((await alice.get('manifests/00000000000000000001')).toString()).toBe('alice');
    expect((await alice.list('manifests/')).map((o) => o.key)).toEqual(['manifests/00000000000000000001']);
  });

  it('refuses keys that try to leave the account or the data directory, and writes nothing outside', async () => {
    const before = readdirSync(dir).sort();
    const paths = [
      '/v1/objects/../x',
      '/v1/objects/chunks/../../x',
      '/v1/objects/chunks/%2e%2e/%2e%2e/x',
      '/v1/objects/%2e%2e%2f%2e%2e%2fx',
      '/v1/objects/chunks/..%2f..%2fx',
      '/v1/objects//etc/passwd',
      '/v1/objects/a%5c..%5cx',
      '/v1/objects/a%00b',
      '/v1/objects/.hidden',
      '/v1/objects/chunks//x',
    ];
    for (const path of paths) {
      const answer = await raw('PUT', path, { token: tokens.a, body: Buffer.from('evil') });
      expect([path, answer.status, answer.json?.error?.code]).toEqual([path, 400, 'BAD_KEY']);
      const read = await raw('GET', path, { token: tokens.a });
      expect([path, read.status]).toEqual([path, 400]);
    }
    expect((await raw('GET', '/v1/objects?prefix=../', { token: tokens.a })).json?.error?.code).toBe('BAD_KEY');
    expect(readdirSync(dir).sort()).toEqual(before);
    expect(readdirSync(data).sort()).toEqual(['accounts', 'accounts.json']);
    // The backend's own keys are checked by the server the same way.
    expect((await failure(backend().get('../outside'))).code).toBe('BAD_ARGUMENT');
  });

  it('refuses an object larger than the limit with TOO_LARGE, declared or streamed', async () => {
    const big = randomBytes(MAX_OBJECT + 1);
    const declared = await raw('PUT', '/v1/objects/chunks/big', { token: tokens.a, body: big });
    expect([declared.status, declared.json?.error?.code]).toEqual([413, 'TOO_LARGE']);
    const streamed = await raw('PUT', '/v1/objects/chunks/big', { token: tokens.a, body: big, headers: { 'transfer-encoding': 'chunked' } });
    expect([streamed.status, streamed.json?.error?.code]).toEqual([413, 'TOO_LARGE']);
    expect((await raw('HEAD', '/v1/objects/chunks/big', { token: tokens.a })).status).toBe(404);
    await backend().put('chunks/fits', randomBytes(MAX_OBJECT));
  });

  it('enforces quotas with QUOTA_EXCEEDED, which the drive sees as REMOTE_QUOTA', async () => {
    const small = backend(tokens.small, 'q');
    await small.put('chunks/a', randomBytes(600));
    const err = await failure(small.put('chunks/b', randomBytes(600)));
    expect(err.code).toBe('REMOTE_QUOTA');
    expect(err.message).toMatch(/QUOTA_EXCEEDED/);
    // Replacing an object counts only the difference; deleting frees room.
    await small.put('chunks/a', randomBytes(900));
    await small.delete('chunks/a');
    await small.put('chunks/b', randomBytes(600));
    await small.put('chunks/c', randomBytes(10));
    await small.put('chunks/d', randomBytes(10));
    expect((await failure(small.put('chunks/e', randomBytes(10)))).code).toBe('REMOTE_QUOTA'); // 3 objects at most
    expect((await raw('PUT', '/v1/objects/q/chunks/f', { token: tokens.small, body: Buffer.alloc(5) })).json?.error?.code).toBe('QUOTA_EXCEEDED');
  });

  it('lists in pages with a continuation key', async () => {
    const remote = backend(tokens.b, 'paged');
    const keys = Array.from({ length: 7 }, (_, i) => `snapshots/s${i}`);
    for (const key of keys) await remote.put(key, Buffer.from(key));
    const first = await raw('GET', '/v1/objects?prefix=paged/snapshots/&limit=3', { token: tokens.b });
    const page = JSON.parse(first.body) as { objects: { key: string }[]; next: string };
    expect(page.objects.map((o) => o.key)).toEqual(['paged/snapshots/s0', 'paged/snapshots/s1', 'paged/snapshots/s2']);
    expect(page.next).toBe('paged/snapshots/s2');
    const second = JSON.parse((await raw('GET', `/v1/objects?prefix=paged/snapshots/&limit=3&after=${encodeURIComponent(page.next)}`, { token: tokens.b })).body);
    expect(second.objects.map((o: { key: string }) => o.key)).toEqual(['paged/snapshots/s3', 'paged/snapshots/s4', 'paged/snapshots/s5']);
    expect((await remote.list('snapshots/')).map((o) => o.key)).toEqual(keys);
  });

  it('refuses a key that would be both an object and the folder of another with 409 KEY_CONFLICT', async () => {
    const put = (path: string, headers: Record<string, string> = {}) => raw('PUT', path, { token: tokens.b, body: Buffer.from('x'), headers });
    expect((await put('/v1/objects/conflict/a')).status).toBe(201);
    for (const headers of [{}, { 'if-none-match': '*' }] as Record<string, string>[]) {
      const under = await put('/v1/objects/conflict/a/b', headers);
      expect([under.status, under.json?.error?.code]).toEqual([409, 'KEY_CONFLICT']);
      const deeper = await put('/v1/objects/conflict/a/b/c', headers);
      expect([deeper.status, deeper.json?.error?.code]).toEqual([409, 'KEY_CONFLICT']);
    }
    expect((await put('/v1/objects/conflict/d/e')).status).toBe(201);
    for (const headers of [{}, { 'if-none-match': '*' }] as Record<string, string>[]) {
      const over = await put('/v1/objects/conflict/d', headers);
      expect([over.status, over.json?.error?.code]).toEqual([409, 'KEY_CONFLICT']);
    }
    expect((await raw('GET', '/v1/objects/conflict/a/b', { token: tokens.b })).status).toBe(404);
    expect((await raw('GET', '/v1/objects/conflict/d', { token: tokens.b })).status).toBe(404);
    const listed = JSON.parse((await raw('GET', '/v1/objects?prefix=conflict/', { token: tokens.b })).body) as { objects: { key: string }[] };
    expect(listed.objects.map((o) => o.key)).toEqual(['conflict/a', 'conflict/d/e']);
  });

  it('reports latency by method, errors by code and each served account\'s usage in /metrics, labelled by account id and never by name', async () => {
    const remote = backend(tokens.b, 'metered');
    await remote.put('chunks/m', Buffer.alloc(1234));
    await failure(remote.get('chunks/absent'));
    const text = (await raw('GET', '/metrics', { token: ADMIN_TOKEN })).body;
    expect(text).toMatch(/^# TYPE coffer_serve_request_duration_seconds histogram$/m);
    const count = (method: string) => Number(new RegExp(`^coffer_serve_request_duration_seconds_count\\{method="${method}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    const inf = (method: string) => Number(new RegExp(`^coffer_serve_request_duration_seconds_bucket\\{method="${method}",le="\\+Inf"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    expect(count('PUT')).toBeGreaterThan(0);
    expect(inf('PUT')).toBe(count('PUT'));
    expect(text).toMatch(/^coffer_serve_request_duration_seconds_sum\{method="GET"\} [0-9.e-]+$/m);
    expect(Number(/^coffer_serve_errors_total\{code="NOT_FOUND"\} (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
    // Accounts are labelled by id: their names appear nowhere in the metrics.
    const bytes = Number(new RegExp(`^coffer_serve_account_bytes\\{account="${ids.b}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    const objects = Number(new RegExp(`^coffer_serve_account_objects\\{account="${ids.b}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    expect(bytes).toBeGreaterThanOrEqual(1234);
    expect(objects).toBeGreaterThanOrEqual(1);
    await remote.delete('chunks/m');
    const after = (await raw('GET', '/metrics', { token: ADMIN_TOKEN })).body;
    expect(after).toContain(`coffer_serve_account_bytes{account="${ids.b}"} ${bytes - 1234}\n`);
    expect(after).toContain(`coffer_serve_account_objects{account="${ids.b}"} ${objects - 1}\n`);
    await backend(tokens.small, 'metered').head('chunks/absent').catch(() => {});
    const onMetricsAddress = (await raw('GET', '/metrics', { base: server!.metricsBase! })).body;
    for (const shown of [after, onMetricsAddress]) {
      for (const name of ['alice', 'bob', 'small']) expect(shown).not.toMatch(new RegExp(`"${name}"|\\b${name}\\b`));
    }
    expect(onMetricsAddress).toContain(`coffer_serve_account_objects{account="${ids.small}"} `);
    // Existing names stay.
    for (const name of ['coffer_serve_requests_total', 'coffer_serve_received_bytes_total', 'coffer_serve_sent_bytes_total', 'coffer_serve_uploads_in_progress']) {
      expect(after).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    }
  });

  it('lets exactly one of many racing exclusive creates win', async () => {
    const remote = backend();
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => remote.createExclusive('manifests/00000000000000000007', Buffer.from(`writer ${i}`))),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as CofferError).code).toBe('REMOTE_EXISTS');
  });
});

describe('a vault on coffer serve', () => {
  it('mounts, uploads, and comes back on a fresh machine from the server and the passphrase alone', async () => {
    const env = { COFFER_TOKEN: tokens.a };
    const url = `${base}/photos/`;
    const ws = new Workspace('coffer-serve-drive-');
    const copy = new Workspace('coffer-serve-clone-');
    try {
      await cofferOk(['init', ws.vault, '--remote', url], { env });
      // init kept the token in config.json, readable by its owner alone: mounts need no COFFER_TOKEN.
      const config = statSync(ws.configPath);
      expect(config.mode & 0o777).toBe(0o600);
      expect(JSON.parse(readFileSync(ws.configPath, 'utf8')).token).toBe(tokens.a);
      const noToken = { COFFER_TOKEN: '' };
      await ws.mount(ws.mnt, noToken);
      const body = randomBytes(200_000); // under this server's object size limit (MAX_OBJECT)
      writeFileSync(ws.path('f'), body);
      const secretName = 'tax-return-of-alice-2026.txt';
      const secretText = Buffer.from('the plaintext the server must never see\n'.repeat(500));
      mkdirSync(ws.path('private-folder'));
      writeFileSync(ws.path(join('private-folder', secretName)), secretText);
      await cofferOk(['sync', ws.mnt, '--wait'], { env: noToken });
      await ws.unmount();

      // The server's data directory holds no name, folder or plaintext of the vault.
      const stored = readdirSync(data, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
      expect(stored.length).toBeGreaterThan(3);
      for (const entry of stored) {
        const path = join(entry.parentPath, entry.name);
        expect(path).not.toMatch(/tax-return|private-folder/);
        const bytes = readFileSync(path);
        for (const needle of [secretName, 'private-folder', 'the plaintext the server must never see']) expect(bytes.includes(needle), `${path} holds ${needle}`).toBe(false);
        expect(bytes.includes(body.subarray(1000, 1064))).toBe(false);
      }

      await cofferOk(['clone', url, copy.vault], { env });
      await copy.mount(copy.mnt, noToken);
      expect(readFileSync(copy.path('f')).equals(body)).toBe(true);
      expect(readFileSync(copy.path(join('private-folder', secretName))).equals(secretText)).toBe(true);
      await copy.unmount();
    } finally {
      await ws.cleanup();
      await copy.cleanup();
    }
  }, 240_000);
});
