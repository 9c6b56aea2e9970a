/**
 * The S3 backend against a real S3 server: a single-node Ceph RADOS Gateway that
 * scripts/rgw.sh starts for this file (installing Ceph first if this machine lacks it,
 * as CI does), plus small local HTTP servers that misbehave on purpose.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteError } from '../src/errors.js';
import { FileBackend } from '../src/remote/file-backend.js';
import { openBackend } from '../src/remote/open-backend.js';
import { RetryingBackend } from '../src/remote/retrying-backend.js';
import { S3Backend, signS3Request, type S3BackendOptions } from '../src/remote/s3-backend.js';
import { failure, remoteConformance } from './helpers/remote-conformance.js';
import { startRgw, type RgwServer } from './helpers/rgw.js';

let rgw: RgwServer;
let s3: Omit<RgwServer, 'stop'>;

beforeAll(async () => {
  const started = Date.now();
  rgw = await startRgw();
  s3 = rgw;
  expect(s3.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  console.log(`RGW up in ${Date.now() - started} ms at ${s3.endpoint}`);
}, 720_000);

afterAll(async () => {
  await rgw?.stop();
}, 120_000);

function freshPrefix(): string {
  return `t-${randomBytes(6).toString('hex')}`;
}

function backend(overrides: Partial<S3BackendOptions> = {}): S3Backend {
  return new S3Backend({
    bucket: s3.bucket,
    prefix: freshPrefix(),
    endpoint: s3.endpoint,
    region: s3.region,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    forcePathStyle: true,
    ...overrides,
  });
}

remoteConformance('s3 (Ceph RGW)', async () => backend());

remoteConformance('s3:// URL through openBackend (retrying)', async () =>
  openBackend(`s3://${s3.bucket}/${freshPrefix()}`, {
    s3Endpoint: s3.endpoint,
    env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey },
  }),
);

describe('SigV4 signing', () => {
  // The examples of "Signature Calculations for the Authorization Header: Transferring
  // Payload in a Single Chunk (AWS Signature Version 4)" in the Amazon S3 API reference
  // (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html): bucket
  // examplebucket in us-east-1, 24 May 2013 00:00:00 UTC, and the documentation's keys.
  const awsExample = {
    bucket: 'examplebucket',
    prefix: '',
    endpoint: 'https://s3.amazonaws.com',
    region: 'us-east-1',
    accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
    secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    forcePathStyle: false,
  };
  const when = new Date('2013-05-24T00:00:00Z');
  const parts = (authorization: string | undefined) =>
    /^AWS4-HMAC-SHA256 Credential=([^,]+), ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(authorization ?? '')?.slice(1);

  it('matches "Example: GET Object" (first 10 bytes of test.txt, Range signed)', () => {
    const { url, headers } = new S3Backend(awsExample).prepare(
      { method: 'GET', key: 'test.txt', headers: { range: 'bytes=0-9' } },
      when,
    );
    expect(url.href).toBe('https://examplebucket.s3.amazonaws.com/test.txt');
    expect(parts(headers.authorization)).toEqual([
      'AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request',
      'host;range;x-amz-content-sha256;x-amz-date',
      'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    ]);
  });

  it('matches "Example: GET Bucket (List Objects)" (max-keys=2, prefix=J)', () => {
    const { url, headers } = new S3Backend(awsExample).prepare(
      { method: 'GET', query: { prefix: 'J', 'max-keys': '2' } },
      when,
    );
    expect(url.href).toBe('https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J');
    expect(parts(headers.authorization)?.[2]).toBe('34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7');
  });

  it('matches "Example: PUT Object" (test$file.text, Date and storage class signed)', () => {
    const body = Buffer.from('Welcome to Amazon S3.');
    const headers = signS3Request(
      {
        method: 'PUT',
        url: new URL('https://examplebucket.s3.amazonaws.com/test%24file.text'),
        headers: { date: 'Fri, 24 May 2013 00:00:00 GMT', 'x-amz-storage-class': 'REDUCED_REDUNDANCY' },
        payloadSha256: createHash('sha256').update(body).digest('hex'),
      },
      'us-east-1',
      awsExample,
      when,
    );
    expect(headers['x-amz-content-sha256']).toBe('44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072');
    expect(parts(headers.authorization)?.slice(1)).toEqual([
      'date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class',
      '98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd',
    ]);
  });

  it('addresses buckets by path on other endpoints and encodes keys the SigV4 way', () => {
    const remote = new S3Backend({ ...awsExample, endpoint: 'http://127.0.0.1:7480', forcePathStyle: true, prefix: 'v/me' });
    const { url, headers } = remote.prepare({ method: 'PUT', key: "a b/c+d!'()*$", body: Buffer.from('x') });
    expect(url.href).toBe('http://127.0.0.1:7480/examplebucket/v/me/a%20b/c%2Bd%21%27%28%29%2A%24');
    expect(headers.host).toBe('127.0.0.1:7480');
    expect(headers['content-length']).toBe('1');
    expect(headers['x-amz-content-sha256']).toBe(createHash('sha256').update('x').digest('hex'));
    expect(remote.description).toBe('s3://examplebucket/v/me/ at http://127.0.0.1:7480');
    expect(remote.description).not.toContain(awsExample.secretAccessKey);
  });
});

describe('s3 backend against RGW', () => {
  it('reports atomic exclusive creates, and they are: one of eight concurrent creates wins', async () => {
    const remote = backend();
    const caps = await remote.capabilities();
    console.log(`RGW capabilities: ${JSON.stringify(caps)}`);
    expect(caps).toEqual({ atomicExclusiveCreate: true });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => remote.createExclusive('manifests/race', Buffer.from(`writer ${i}`))),
    );
    const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
    expect(won).toHaveLength(1);
    for (const r of results) {
      if (r.status === 'rejected') expect((r.reason as RemoteError).code).toBe('REMOTE_EXISTS');
    }
    expect((await remote.get('manifests/race')).toString()).toBe(`writer ${won[0]}`);
    expect(await remote.list('')).toEqual([{ key: 'manifests/race', size: 8 }]); // the probe left nothing visible
  });

  it('lists across pages with continuation tokens, only under its prefix, sorted', async () => {
    const remote = backend({ listPageSize: 3 });
    const neighbour = backend({ prefix: `${remote.prefix.slice(0, -1)}x` }); // same start, another folder
    await neighbour.put('chunks/zz', Buffer.from('not mine'));
    const keys = Array.from({ length: 11 }, (_, i) => `chunks/${String(i).padStart(2, '0')}/${randomBytes(4).toString('hex')}`);
    await Promise.all([...keys].reverse().map((key, i) => remote.put(key, Buffer.alloc(i))));
    const listed = await remote.list('chunks/');
    expect(listed.map((o) => o.key)).toEqual([...keys].sort());
    expect(listed.map((o) => o.size)).toEqual(Array.from({ length: 11 }, (_, i) => 10 - i));
    expect((await remote.list('chunks/0')).length).toBe(10);
    expect(await backend({ listPageSize: 1, prefix: remote.prefix }).list('chunks/1')).toHaveLength(1);
  });

  it('turns bad credentials into a clear error that is not retried', async () => {
    let retries = 0;
    const wrongSecret = new RetryingBackend(backend({ secretAccessKey: 'not-the-secret' }), { onRetry: () => retries++ });
    const err = await failure(wrongSecret.put('k', Buffer.from('v')));
    expect(err.code).toBe('REMOTE_UNAUTHORIZED');
    expect(err.message).toMatch(/HTTP 403 SignatureDoesNotMatch/);
    expect(err.message).toMatch(/AWS_SECRET_ACCESS_KEY/);
    const unknownKey = await failure(backend({ accessKeyId: 'NOSUCHACCESSKEY00000' }).get('k'));
    expect(unknownKey.code).toBe('REMOTE_UNAUTHORIZED');
    expect(unknownKey.message).toMatch(/HTTP 403 InvalidAccessKeyId/);
    const headErr = await failure(backend({ secretAccessKey: 'not-the-secret' }).head('k')); // no body to name the cause
    expect(headErr.code).toBe('REMOTE_UNAUTHORIZED');
    expect(headErr.message).toMatch(/HTTP 403/);
    const noBucket = await failure(backend({ bucket: 'no-such-bucket' }).list(''));
    expect(noBucket.code).toBe('REMOTE_REFUSED');
    expect(noBucket.message).toMatch(/NoSuchBucket/);
    expect(retries).toBe(0);
  });
});

describe('s3 backend on an unreachable or silent endpoint', () => {
  it('fails fast with REMOTE_UNAVAILABLE when nothing listens', async () => {
    const server = await listen(() => {});
    const { port } = server.address() as AddressInfo;
    await close(server);
    const started = Date.now();
    const err = await failure(backend({ endpoint: `http://127.0.0.1:${port}` }).get('k'));
    expect(err).toBeInstanceOf(RemoteError);
    expect(err.code).toBe('REMOTE_UNAVAILABLE');
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('times out a server that never answers, and aborts mid-request', async () => {
    const server = await listen(() => {}); // accepts, never responds
    try {
      const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      let started = Date.now();
      const err = await failure(backend({ endpoint, timeoutMs: 300 }).head('k'));
      expect(err.code).toBe('REMOTE_UNAVAILABLE');
      expect(Date.now() - started).toBeLessThan(2000);

      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('user gave up')), 100);
      started = Date.now();
      await expect(backend({ endpoint }).get('k', { signal: controller.signal })).rejects.toThrow('user gave up');
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      await close(server);
    }
  });
});

describe('retrying backend with a flaky server in front of RGW', () => {
  it('retries 503s with backoff until the request gets through', async () => {
    const proxy = await flakyProxy((n) => (n <= 2 ? { status: 503, code: 'SlowDown' } : 'forward'));
    try {
      const retries: Array<[string, string, number, string]> = [];
      const direct = backend();
      const remote = new RetryingBackend(backend({ endpoint: proxy.url, prefix: direct.prefix }), {
        baseDelayMs: 5,
        onRetry: (op, key, attempt, err) => retries.push([op, key, attempt, err.code]),
      });
      await remote.put('chunks/aa/aa1', Buffer.from('payload'));
      expect(retries).toEqual([
        ['put', 'chunks/aa/aa1', 1, 'REMOTE_UNAVAILABLE'],
        ['put', 'chunks/aa/aa1', 2, 'REMOTE_UNAVAILABLE'],
      ]);
      expect(proxy.requests()).toBe(3);
      expect((await direct.get('chunks/aa/aa1')).toString()).toBe('payload');
    } finally {
      await proxy.close();
    }
  });

  it('gives up after the configured attempts, and never retries a 4xx or a missing object', async () => {
    const always503 = await flakyProxy(() => ({ status: 503, code: 'ServiceUnavailable' }));
    const always400 = await flakyProxy(() => ({ status: 400, code: 'InvalidArgument' }));
    const forward = await flakyProxy(() => 'forward');
    try {
      const gaveUp = await failure(new RetryingBackend(backend({ endpoint: always503.url }), { attempts: 3, baseDelayMs: 1 }).get('k'));
      expect(gaveUp.code).toBe('REMOTE_UNAVAILABLE');
      expect(always503.requests()).toBe(3);

      const refused = await failure(new RetryingBackend(backend({ endpoint: always400.url }), { baseDelayMs: 1 }).get('k'));
      expect(refused.code).toBe('REMOTE_REFUSED');
      expect(refused.message).toMatch(/HTTP 400 InvalidArgument/);
      expect(always400.requests()).toBe(1);

      const missing = await failure(new RetryingBackend(backend({ endpoint: forward.url }), { baseDelayMs: 1 }).get('nope'));
      expect(missing.code).toBe('REMOTE_NOT_FOUND');
      expect(forward.requests()).toBe(1);
    } finally {
      await Promise.all([always503.close(), always400.close(), forward.close()]);
    }
  });

  it('aborts promptly while waiting between attempts', async () => {
    const proxy = await flakyProxy(() => ({ status: 503, code: 'SlowDown' }));
    try {
      const controller = new AbortController();
      const remote = new RetryingBackend(backend({ endpoint: proxy.url }), {
        baseDelayMs: 10_000,
        random: () => 0.99, // a ~10 s wait
        onRetry: () => setTimeout(() => controller.abort(new Error('shutting down')), 20),
      });
      const started = Date.now();
      await expect(remote.get('k', { signal: controller.signal })).rejects.toThrow('shutting down');
      expect(Date.now() - started).toBeLessThan(1000);
      expect(proxy.requests()).toBe(1);
    } finally {
      await proxy.close();
    }
  });

  it('does not report REMOTE_EXISTS for its own create whose answer was lost', async () => {
    // When armed, the next PUT reaches RGW and takes effect, but the client never hears back.
    let armed = false;
    const proxy = await flakyProxy((_n, req) => {
      if (!armed || req.method !== 'PUT') return 'forward';
      armed = false;
      return 'forward-then-drop';
    });
    try {
      const direct = backend();
      const retries: string[] = [];
      const remote = new RetryingBackend(backend({ endpoint: proxy.url, prefix: direct.prefix }), {
        baseDelayMs: 1,
        onRetry: (_op, _key, _n, err) => retries.push(err.message),
      });
      await remote.capabilities();
      armed = true;
      await remote.createExclusive('manifests/00000000000000000001', Buffer.from('ours'));
      expect(retries).toHaveLength(1);
      expect((await direct.get('manifests/00000000000000000001')).toString()).toBe('ours');

      // Someone else's object stays someone else's, lost answer or not.
      await direct.put('manifests/00000000000000000002', Buffer.from('theirs'));
      armed = true;
      const err = await failure(remote.createExclusive('manifests/00000000000000000002', Buffer.from('ours')));
      expect(err.code).toBe('REMOTE_EXISTS');
      expect(retries).toHaveLength(2);
    } finally {
      await proxy.close();
    }
  });
});

describe('s3 backend on a server that ignores If-None-Match', () => {
  it('reports non-atomic creates and still refuses an existing key', async () => {
    const objects = new Map<string, Buffer>();
    const server = await listen((req, res, body) => {
      const key = req.url!.split('?')[0]!;
      if (req.method === 'PUT') objects.set(key, body);
      if (req.method === 'DELETE') objects.delete(key);
      const stored = objects.get(key);
      if ((req.method === 'GET' || req.method === 'HEAD') && !stored) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-length': req.method === 'GET' || req.method === 'HEAD' ? stored!.length : 0 });
      res.end(req.method === 'GET' ? stored : undefined);
    });
    try {
      const remote = backend({ endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
      expect(await remote.capabilities()).toEqual({ atomicExclusiveCreate: false });
      expect([...objects.keys()].filter((k) => k.includes('.coffer-probe'))).toEqual([]);
      await remote.createExclusive('manifests/1', Buffer.from('first'));
      expect((await failure(remote.createExclusive('manifests/1', Buffer.from('second')))).code).toBe('REMOTE_EXISTS');
      expect((await remote.get('manifests/1')).toString()).toBe('first');
    } finally {
      await close(server);
    }
  });
});

describe('opening s3:// remotes', () => {
  const env = { AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret' };

  it('wraps S3 in retries, with path-style addressing on non-AWS endpoints', () => {
    const remote = openBackend('s3://bucket/vaults/me', { s3Endpoint: 'http://127.0.0.1:7480', env });
    expect(remote).toBeInstanceOf(RetryingBackend);
    const inner = (remote as RetryingBackend).inner as S3Backend;
    expect(inner).toBeInstanceOf(S3Backend);
    expect(inner.prefix).toBe('vaults/me/');
    expect(inner.prepare({ method: 'GET', key: 'k' }).url.href).toBe('http://127.0.0.1:7480/bucket/vaults/me/k');
    expect(remote.description).not.toContain('secret');
  });

  it('defaults to AWS for the region, virtual-host style, and reads the endpoint from the environment', () => {
    const aws = (openBackend('s3://bucket', { env: { ...env, AWS_DEFAULT_REGION: 'eu-west-1' } }) as RetryingBackend).inner as S3Backend;
    expect(aws.region).toBe('eu-west-1');
    expect(aws.prepare({ method: 'GET', key: 'k' }).url.href).toBe('https://bucket.s3.eu-west-1.amazonaws.com/k');
    const regionWins = (openBackend('s3://b/p', { s3Region: 'ap-south-1', env: { ...env, AWS_REGION: 'x' } }) as RetryingBackend).inner as S3Backend;
    expect(regionWins.region).toBe('ap-south-1');
    const fromEnv = (openBackend('s3://b/p', { env: { ...env, COFFER_S3_ENDPOINT: 'http://10.0.0.1:9000' } }) as RetryingBackend).inner as S3Backend;
    expect(fromEnv.prepare({ method: 'GET', key: 'k' }).url.href).toBe('http://10.0.0.1:9000/b/p/k');
  });

  it('refuses missing credentials or bucket clearly, and file:// is unchanged', () => {
    expect(() => openBackend('s3://bucket/p', { env: {} })).toThrow(/set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    expect(() => openBackend('s3:///p', { env })).toThrow(/no bucket/);
    expect(openBackend('file:///tmp/x')).toBeInstanceOf(FileBackend);
  });
});

// ---- local HTTP servers -------------------------------------------------------------

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

async function listen(handler: Handler): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => handler(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

type Verdict = 'forward' | 'forward-then-drop' | { status: number; code: string };

/**
 * A proxy to RGW that decides per request (numbered from 1) whether to pass it on, drop
 * the connection after RGW has acted, or answer with an S3 error itself. The Host header
 * is passed through untouched: it is part of what the client signed.
 */
async function flakyProxy(decide: (n: number, req: IncomingMessage) => Verdict) {
  let count = 0;
  const target = new URL(s3.endpoint);
  const server = await listen((req, res, body) => {
    const verdict = decide(++count, req);
    if (verdict === 'forward' || verdict === 'forward-then-drop') {
      const upstream = httpRequest(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          const chunks: Buffer[] = [];
          answer.on('data', (chunk: Buffer) => chunks.push(chunk));
          answer.on('end', () => {
            if (verdict === 'forward-then-drop') {
              res.socket?.destroy();
              return;
            }
            res.writeHead(answer.statusCode!, answer.headers);
            res.end(Buffer.concat(chunks));
          });
        },
      );
      upstream.on('error', () => res.socket?.destroy());
      upstream.end(body);
      return;
    }
    const xml = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${verdict.code}</Code><Message>injected</Message></Error>`;
    res.writeHead(verdict.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
    res.end(xml);
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => count,
    close: () => close(server),
  };
}
