/**
 * `coffer serve --s3`: two real server processes over one prefix of a real S3 bucket (a
 * single-node Ceph RGW, see test/helpers/rgw.ts), behaving as one server: the backend
 * conformance suite through one, objects and accounts seen by both, exclusive creates racing
 * across them, quotas, isolation, and nothing written to the bucket outside the prefix.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CofferError } from '../src/errors.js';
import { HttpBackend } from '../src/remote/http-backend.js';
import { S3Backend } from '../src/remote/s3-backend.js';
import { CLI, cofferOk } from './helpers/drive.js';
import { failure, remoteConformance } from './helpers/remote-conformance.js';
import { startRgw, type RgwServer } from './helpers/rgw.js';

let rgw: RgwServer | undefined;
const servers: ChildProcess[] = [];
const bases: string[] = [];
const prefix = `serve-${randomBytes(4).toString('hex')}`;
const tokens: Record<'a' | 'b' | 'small', string> = { a: '', b: '', small: '' };
let smallId = '';
const ADMIN_TOKEN = `admin-${randomBytes(16).toString('hex')}`;
/** Keys in the bucket before the servers ran (the RGW script's own marker). */
let keysBefore: string[] = [];
const MAX_OBJECT = 256 * 1024;
let s3env: NodeJS.ProcessEnv;
let s3url: string;

async function addAccount(name: string, extra: string[] = []): Promise<string> {
  const { stdout } = await cofferOk(['serve', 'account', 'add', name, '--s3', s3url, '--json', ...extra], { env: s3env });
  const { id, token } = JSON.parse(stdout) as { id: string; token: string };
  if (name === 'small') smallId = id;
  return token;
}

async function startServer(): Promise<string> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--s3', s3url, '--s3-endpoint', rgw!.endpoint, '--max-object-size', String(MAX_OBJECT)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...s3env, COFFER_S3_ENDPOINT: '', COFFER_ADMIN_TOKEN: ADMIN_TOKEN },
  });
  servers.push(child);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise<string>((resolvePromise, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const match = /listening on (http:\/\/\S+?)\/?\n/.exec(out);
      if (match) resolvePromise(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`coffer serve --s3 exited (${code}): ${stderr}`)));
  });
}

beforeAll(async () => {
  rgw = await startRgw();
  s3env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey, AWS_REGION: rgw.region, COFFER_S3_ENDPOINT: rgw.endpoint };
  s3url = `s3://${rgw.bucket}/${prefix}`;
  tokens.a = await addAccount('alice');
  tokens.b = await addAccount('bob');
  tokens.small = await addAccount('small', ['--quota-bytes', '1000', '--quota-objects', '3']);
  keysBefore = (await everyKeyInBucket()).filter((k) => !k.startsWith(`${prefix}/`));
  bases.push(await startServer(), await startServer());
}, 720_000);

afterAll(async () => {
  try {
    await Promise.all(
      servers.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }),
    );
  } finally {
    await rgw?.stop();
  }
}, 120_000);

function backend(server: 0 | 1, token = tokens.a, vault = `v-${randomBytes(4).toString('hex')}`): HttpBackend {
  return new HttpBackend({ url: `${bases[server]}/${vault}/`, token });
}

function bucketOptions() {
  return {
    bucket: rgw!.bucket,
    prefix: '',
    endpoint: rgw!.endpoint,
    region: rgw!.region,
    accessKeyId: rgw!.accessKeyId,
    secretAccessKey: rgw!.secretAccessKey,
    forcePathStyle: true,
  };
}

/** Every key in the bucket, read page by page (S3Backend.list would hide probe objects). */
async function everyKeyInBucket(): Promise<string[]> {
  const bucket = new S3Backend(bucketOptions());
  const keys: string[] = [];
  for (;;) {
    const page = await bucket.listPage('', keys.at(-1) ?? '', 1000);
    keys.push(...page.objects.map((o) => o.key));
    if (!page.truncated) return keys;
  }
}

function raw(server: 0 | 1, method: string, path: string, options: { token?: string; body?: Buffer; headers?: Record<string, string> } = {}) {
  return new Promise<{ status: number; body: string; code: string | undefined }>((resolvePromise, reject) => {
    const url = new URL(bases[server]!);
    const req = request(
      { host: url.hostname, port: url.port, method, path, headers: { ...(options.token ? { authorization: `Bearer ${options.token}` } : {}), ...options.headers } },
      (res) => {
        const pieces: Buffer[] = [];
        res.on('data', (d: Buffer) => pieces.push(d));
        res.on('end', () => {
          const body = Buffer.concat(pieces).toString('utf8');
          let code: string | undefined;
          try {
            code = (JSON.parse(body) as { error?: { code: string } }).error?.code;
          } catch {
            code = undefined;
          }
          resolvePromise({ status: res.statusCode!, body, code });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

remoteConformance('http (coffer serve --s3 on Ceph RGW)', async () => backend(0));

describe('coffer serve --s3: two processes over one bucket', () => {
  it('accepts on both servers an account added after they started', async () => {
    const late = await addAccount('late');
    for (const server of [0, 1] as const) {
      const remote = backend(server, late, `late-${server}`);
      await remote.put('chunks/x', Buffer.from('late'));
      expect((await remote.get('chunks/x')).toString()).toBe('late');
      await remote.delete('chunks/x');
    }
  });

  /** Polls both servers until `check` holds on each (they re-read the registry every 5 s). */
  async function onBothWithin(ms: number, check: (server: 0 | 1) => Promise<boolean>): Promise<number[]> {
    const deadline = Date.now() + ms;
    const done = new Set<number>();
    while (done.size < 2 && Date.now() < deadline) {
      for (const server of [0, 1] as const) if (!done.has(server) && (await check(server))) done.add(server);
      await new Promise((r) => setTimeout(r, 250));
    }
    return [...done].sort();
  }

  it('stops accepting, on both servers, the tokens `account revoke --s3` revokes while they run', async () => {
    const doomed = await addAccount('doomed');
    for (const server of [0, 1] as const) await backend(server, doomed, 'd').put('chunks/x', Buffer.from('x'));
    await cofferOk(['serve', 'account', 'revoke', 'doomed', '--s3', s3url], { env: s3env });
    const refused = await onBothWithin(8_000, async (server) => (await raw(server, 'HEAD', '/v1/objects/d/chunks/x', { token: doomed })).status === 401);
    expect(refused).toEqual([0, 1]);
    // A new token lets the account in again, objects intact.
    const { stdout } = await cofferOk(['serve', 'account', 'token', 'doomed', '--s3', s3url, '--json'], { env: s3env });
    const fresh = (JSON.parse(stdout) as { token: string }).token;
    expect((await backend(1, fresh, 'd').get('chunks/x')).toString()).toBe('x');
  });

  it('applies on both servers a quota `account set --s3` changes while they run', async () => {
    const growing = await addAccount('growing', ['--quota-bytes', '100']);
    const put = (server: 0 | 1, key: string) => raw(server, 'PUT', `/v1/objects/g/${key}`, { token: growing, body: randomBytes(500) });
    expect((await put(0, 'a')).code).toBe('QUOTA_EXCEEDED');
    await cofferOk(['serve', 'account', 'set', 'growing', '--s3', s3url, '--quota-bytes', '10000'], { env: s3env });
    const accepted = await onBothWithin(8_000, async (server) => (await put(server, `from-${server}`)).status === 201);
    expect(accepted).toEqual([0, 1]);
    const { stdout } = await cofferOk(['serve', 'account', 'list', '--s3', s3url, '--json'], { env: s3env });
    expect((JSON.parse(stdout) as { name: string; quotaBytes: number }[]).find((a) => a.name === 'growing')?.quotaBytes).toBe(10000);
  });

  it('serves through one server what was put through the other', async () => {
    const one = backend(0, tokens.a, 'shared-vault');
    const two = backend(1, tokens.a, 'shared-vault');
    const body = randomBytes(150_000);
    await one.put('chunks/ab/ab01', body);
    await one.put('manifests/00000000000000000001', Buffer.from('m1'));
    expect((await two.get('chunks/ab/ab01')).equals(body)).toBe(true);
    expect((await two.get('chunks/ab/ab01', { range: { offset: 1000, length: 10 } })).equals(body.subarray(1000, 1010))).toBe(true);
    expect(await two.head('chunks/ab/ab01')).toEqual({ key: 'chunks/ab/ab01', size: body.length });
    expect(await two.list('')).toEqual([
      { key: 'chunks/ab/ab01', size: body.length },
      { key: 'manifests/00000000000000000001', size: 2 },
    ]);
    await two.delete('manifests/00000000000000000001');
    expect((await failure(one.get('manifests/00000000000000000001'))).code).toBe('REMOTE_NOT_FOUND');
  });

  it('lets exactly one of racing exclusive creates win across the two servers', async () => {
    const vault = `race-${randomBytes(4).toString('hex')}`;
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => backend((i % 2) as 0 | 1, tokens.a, vault).createExclusive('manifests/00000000000000000007', Buffer.from(`writer ${i}`))),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as CofferError).code).toBe('REMOTE_EXISTS');
    const winner = results.findIndex((r) => r.status === 'fulfilled');
    for (const server of [0, 1] as const) {
      expect((await backend(server, tokens.a, vault).get('manifests/00000000000000000007')).toString()).toBe(`writer ${winner}`);
    }
  });

  it('refuses a put past the quota with 507 QUOTA_EXCEEDED, counting what the other server stored', async () => {
    await backend(0, tokens.small, 'q').put('chunks/a', randomBytes(600));
    // Server 2 counts this account's usage from the bucket on its first request for it.
    const over = await raw(1, 'PUT', '/v1/objects/q/chunks/b', { token: tokens.small, body: randomBytes(600) });
    expect([over.status, over.code]).toEqual([507, 'QUOTA_EXCEEDED']);
    const err = await failure(backend(0, tokens.small, 'q').put('chunks/b', randomBytes(600)));
    expect(err.code).toBe('REMOTE_QUOTA');
    await backend(1, tokens.small, 'q').put('chunks/c', randomBytes(10));
    const metrics = await raw(1, 'GET', '/metrics', { token: ADMIN_TOKEN });
    expect(metrics.body).toContain(`\ncoffer_serve_account_bytes{account="${smallId}"} 610\n`);
    expect(metrics.body).toMatch(/^coffer_serve_errors_total\{code="QUOTA_EXCEEDED"\} 1$/m);
  });

  it('refuses an object over the size limit, sent with a length or chunked, and stores none of it', async () => {
    const big = randomBytes(MAX_OBJECT + 1);
    const declared = await raw(0, 'PUT', '/v1/objects/big/x', { token: tokens.a, body: big });
    expect([declared.status, declared.code]).toEqual([413, 'TOO_LARGE']);
    const chunked = await raw(1, 'PUT', '/v1/objects/big/x', { token: tokens.a, body: big, headers: { 'transfer-encoding': 'chunked' } });
    expect([chunked.status, chunked.code]).toEqual([413, 'TOO_LARGE']);
    expect((await raw(0, 'HEAD', '/v1/objects/big/x', { token: tokens.a })).status).toBe(404);
    // A chunked upload that fits is spooled, then stored whole.
    const fits = randomBytes(MAX_OBJECT);
    expect((await raw(1, 'PUT', '/v1/objects/big/y', { token: tokens.a, body: fits, headers: { 'transfer-encoding': 'chunked' } })).status).toBe(201);
    expect((await backend(0, tokens.a, 'big').get('y')).equals(fits)).toBe(true);
  });

  it('keeps accounts apart on both servers and refuses bad keys and tokens', async () => {
    await backend(0, tokens.a, 'iso').put('chunks/secret', Buffer.from('alice'));
    for (const server of [0, 1] as const) {
      const bob = backend(server, tokens.b, 'iso');
      expect((await failure(bob.get('chunks/secret'))).code).toBe('REMOTE_NOT_FOUND');
      expect(await bob.list('')).toEqual([]);
      for (const path of ['/v1/objects/../x', '/v1/objects/iso/%2e%2e/%2e%2e/x', '/v1/objects/a%2fb', '/v1/objects/.hidden', '/v1/objects//x']) {
        const answer = await raw(server, 'PUT', path, { token: tokens.b, body: Buffer.from('evil') });
        expect([path, answer.status, answer.code]).toEqual([path, 400, 'BAD_KEY']);
      }
      const wrong = await raw(server, 'GET', '/v1/objects/iso/chunks/secret', { token: 'cft_wrong' });
      expect([wrong.status, wrong.code]).toEqual([401, 'UNAUTHORIZED']);
    }
    expect((await backend(1, tokens.a, 'iso').get('chunks/secret')).toString()).toBe('alice');
  });

  it('writes nothing to the bucket outside its prefix, and lays objects out as documented', async () => {
    const keys = await everyKeyInBucket();
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.filter((k) => !k.startsWith(`${prefix}/`))).toEqual(keysBefore);
    expect(keys).toContain(`${prefix}/accounts.json`);
    const layout = new RegExp(`^${prefix}/(accounts\\.json|accounts/[0-9a-f]{32}/objects/.+|\\.coffer-probe/.*)$`);
    expect(keys.filter((k) => k.startsWith(`${prefix}/`) && !layout.test(k))).toEqual([]);
    expect(keys.some((k) => k.endsWith('/objects/shared-vault/chunks/ab/ab01'))).toBe(true);
  });
});
