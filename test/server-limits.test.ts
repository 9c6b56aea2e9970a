/**
 * `coffer serve` under abuse, each case against a real server child process: slow-loris
 * headers and bodies, oversized streamed bodies, too many uploads at once, request floods,
 * tokens revoked and quotas changed while it runs, and a SIGKILL in the middle of many uploads.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { request, type ClientRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cofferOk } from './helpers/drive.js';
import { startServe } from './helpers/serve.js';

const dir = mkdtempSync(join(tmpdir(), 'coffer-serve-limits-'));
const running = new Set<ChildProcess>();
let dataDirs = 0;

afterAll(async () => {
  for (const child of running) await stop(child, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Served {
  child: ChildProcess;
  port: number;
  data: string;
}

async function stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
  }
  running.delete(child);
}

function newDataDir(): string {
  return join(dir, `data-${++dataDirs}`);
}

/** Lets the tests read /metrics (uploads in progress). */
const ADMIN_TOKEN = 'limits-test-admin-token';

async function serve(data: string, flags: string[] = []): Promise<Served> {
  const { child, port } = await startServe(['--listen', '127.0.0.1:0', '--data', data, ...flags], { COFFER_ADMIN_TOKEN: ADMIN_TOKEN });
  running.add(child);
  return { child, port, data };
}

async function addAccount(data: string, name: string, extra: string[] = []): Promise<{ id: string; token: string }> {
  const { stdout } = await cofferOk(['serve', 'account', 'add', name, '--data', data, '--json', ...extra]);
  return JSON.parse(stdout) as { id: string; token: string };
}

interface Answer {
  status: number;
  body: Buffer;
  code: string | undefined;
}

function collect(req: ClientRequest): Promise<Answer> {
  return new Promise((resolvePromise, reject) => {
    req.on('error', reject);
    req.on('response', (res) => {
      const pieces: Buffer[] = [];
      res.on('data', (d: Buffer) => pieces.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(pieces);
        let code: string | undefined;
        try {
          code = (JSON.parse(body.toString('utf8')) as { error?: { code?: string } }).error?.code;
        } catch {
          code = undefined;
        }
        resolvePromise({ status: res.statusCode!, body, code });
      });
    });
  });
}

function open(server: Served, method: string, path: string, token?: string, headers: Record<string, string | number> = {}): ClientRequest {
  return request({
    host: '127.0.0.1',
    port: server.port,
    method,
    path,
    agent: false,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });
}

function call(server: Served, method: string, path: string, token?: string, body?: Buffer, headers: Record<string, string | number> = {}): Promise<Answer> {
  const req = open(server, method, path, token, headers);
  const answer = collect(req);
  req.end(body);
  return answer;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it returns true; the time it took, ms (throws after `ms`). */
async function within(ms: number, check: () => Promise<boolean> | boolean): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > ms) throw new Error(`not within ${ms} ms`);
    await sleep(50);
  }
}

const tmpEntries = (data: string, id: string): string[] => {
  const tmp = join(data, 'accounts', id, 'tmp');
  return existsSync(tmp) ? readdirSync(tmp) : [];
};

async function uploadsInProgress(server: Served): Promise<number> {
  const metrics = (await call(server, 'GET', '/metrics', ADMIN_TOKEN)).body.toString('utf8');
  return Number(/^coffer_serve_uploads_in_progress (\d+)$/m.exec(metrics)![1]);
}

describe('coffer serve against slow clients', () => {
  const HEADERS_S = 2;
  const REQUEST_S = 4;
  const SLACK_MS = 1_500;
  let server: Served;
  let alice: { id: string; token: string };

  beforeAll(async () => {
    const data = newDataDir();
    alice = await addAccount(data, 'alice');
    server = await serve(data, ['--headers-timeout', String(HEADERS_S), '--request-timeout', String(REQUEST_S), '--idle-timeout', '30']);
  });

  it('cuts off a client that sends its headers a byte a second, within the headers timeout', async () => {
    const socket = connect(server.port, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => (received += d));
    // The server may reset the connection while a byte is on its way (ECONNRESET): 'close' follows either way.
    socket.on('error', () => {});
    const started = Date.now();
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now() - started)));
    socket.write(`GET /v1/objects/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.token}\r\nX-Slow: `);
    const drip = setInterval(() => socket.write('a'), 1_000);
    try {
      const elapsed = await Promise.race([closed, sleep(20_000).then(() => Infinity)]);
      // Not before the timeout (the drip keeps the connection busy), not much after it.
      expect(elapsed).toBeGreaterThanOrEqual(HEADERS_S * 1000 - 200);
      expect(elapsed).toBeLessThan(HEADERS_S * 1000 + SLACK_MS);
      if (received !== '') expect(received).toMatch(/^HTTP\/1\.1 408 /);
    } finally {
      clearInterval(drip);
      socket.destroy();
    }
  });

  it('cuts off an upload that trickles its body, within the request timeout, and keeps nothing of it', async () => {
    const req = open(server, 'PUT', '/v1/objects/chunks/slow', alice.token, { 'content-length': 1024 * 1024 });
    const outcome = collect(req).then(
      (answer) => `answer ${answer.status}`,
      (err: NodeJS.ErrnoException) => `error ${err.code}`,
    );
    const started = Date.now();
    req.flushHeaders();
    const drip = setInterval(() => req.write(randomBytes(1024)), 250);
    try {
      const what = await Promise.race([outcome, sleep(20_000).then(() => 'still open')]);
      const elapsed = Date.now() - started;
      // Node answers 408 and closes; a client still writing may see the reset first.
      expect(what).toMatch(/^(answer 408|error ECONNRESET|error EPIPE)$/);
      expect(elapsed).toBeLessThan(REQUEST_S * 1000 + SLACK_MS);
    } finally {
      clearInterval(drip);
      req.destroy();
    }
    expect((await call(server, 'HEAD', '/v1/objects/chunks/slow', alice.token)).status).toBe(404);
    await within(2_000, () => tmpEntries(server.data, alice.id).length === 0);
    expect(await uploadsInProgress(server)).toBe(0);
  });

  it('refuses a chunked body past --max-object-size with 413 while it streams, and stores nothing', async () => {
    const data = newDataDir();
    const bob = await addAccount(data, 'bob', ['--quota-bytes', '1M']);
    const limited = await serve(data, ['--max-object-size', '256K']);
    try {
      const req = open(limited, 'PUT', '/v1/objects/chunks/big', bob.token, { 'transfer-encoding': 'chunked' });
      const answer = collect(req);
      let sent = 0;
      let refused = false;
      void answer.then(() => (refused = true), () => (refused = true));
      // 4 MiB offered in 64 KiB pieces; the answer must come long before the end.
      while (sent < 4 * 1024 * 1024 && !refused && !req.destroyed) {
        await new Promise<void>((r) => req.write(randomBytes(64 * 1024), () => r()));
        sent += 64 * 1024;
        await sleep(5);
      }
      req.end();
      const { status, code } = await answer;
      expect([status, code]).toEqual([413, 'TOO_LARGE']);
      expect(sent).toBeLessThan(4 * 1024 * 1024);
      expect((await call(limited, 'HEAD', '/v1/objects/chunks/big', bob.token)).status).toBe(404);
      await within(2_000, () => tmpEntries(data, bob.id).length === 0);
      // The refused bytes reserved nothing: the whole 1 MiB quota is still there.
      for (let i = 0; i < 4; i++) expect((await call(limited, 'PUT', `/v1/objects/chunks/q${i}`, bob.token, randomBytes(256 * 1024))).status).toBe(201);
      expect((await call(limited, 'PUT', '/v1/objects/chunks/q4', bob.token, Buffer.alloc(1))).code).toBe('QUOTA_EXCEEDED');
    } finally {
      await stop(limited.child);
    }
  });

  it('cuts off an upload that stalls, within the idle timeout', async () => {
    const data = newDataDir();
    const carol = await addAccount(data, 'carol');
    const idle = await serve(data, ['--idle-timeout', '2', '--request-timeout', '60']);
    try {
      const req = open(idle, 'PUT', '/v1/objects/chunks/stalled', carol.token, { 'content-length': 1024 * 1024 });
      const outcome = collect(req).then(
        (answer) => `answer ${answer.status}`,
        (err: NodeJS.ErrnoException) => `error ${err.code}`,
      );
      const started = Date.now();
      req.write(randomBytes(100 * 1024));
      const what = await Promise.race([outcome, sleep(20_000).then(() => 'still open')]);
      expect(what).toBe('error ECONNRESET');
      expect(Date.now() - started).toBeLessThan(2_000 + SLACK_MS);
      expect((await call(idle, 'HEAD', '/v1/objects/chunks/stalled', carol.token)).status).toBe(404);
      await within(2_000, () => tmpEntries(data, carol.id).length === 0);
    } finally {
      await stop(idle.child);
    }
  });

  it('refuses timeout flags Node would refuse, with exit code 2, and shortens the headers timeout to a short request timeout', async () => {
    const { coffer } = await import('./helpers/drive.js');
    const data = newDataDir();
    mkdirSync(data);
    for (const flags of [['--request-timeout', '2', '--headers-timeout', '3'], ['--request-timeout', '0'], ['--max-uploads', '0'], ['--rate-limit', '-1']]) {
      const { code, stderr } = await coffer(['serve', '--listen', '127.0.0.1:0', '--data', data, ...flags]);
      expect([flags, code, stderr]).toEqual([flags, 2, expect.stringMatching(/^coffer: --/)]);
    }
    const short = await serve(data, ['--request-timeout', '3']);
    await stop(short.child);
    expect([short.child.exitCode, short.child.signalCode]).toEqual([0, null]);
  });

  it('stops', async () => {
    await stop(server.child);
    expect(server.child.exitCode).toBe(0);
  });
});

describe('coffer serve limits per account', () => {
  it('answers a third concurrent upload with 429 TOO_MANY_UPLOADS under --max-uploads 2, and takes uploads again after', async () => {
    const data = newDataDir();
    const alice = await addAccount(data, 'alice');
    const bob = await addAccount(data, 'bob');
    const server = await serve(data, ['--max-uploads', '2']);
    try {
      const bodies = [randomBytes(128 * 1024), randomBytes(128 * 1024)];
      const slow = bodies.map((body, i) => {
        const req = open(server, 'PUT', `/v1/objects/chunks/slow${i}`, alice.token, { 'content-length': body.length });
        req.write(body.subarray(0, 1000));
        return { req, body, answer: collect(req) };
      });
      await within(5_000, async () => (await uploadsInProgress(server)) === 2);
      const third = await call(server, 'PUT', '/v1/objects/chunks/third', alice.token, randomBytes(1000));
      expect([third.status, third.code]).toEqual([429, 'TOO_MANY_UPLOADS']);
      // Another account's uploads are counted apart.
      expect((await call(server, 'PUT', '/v1/objects/chunks/other', bob.token, randomBytes(1000))).status).toBe(201);
      for (const { req, body } of slow) req.end(body.subarray(1000));
      for (const { answer } of slow) expect((await answer).status).toBe(201);
      const again = await Promise.all([0, 1].map((i) => call(server, 'PUT', `/v1/objects/chunks/again${i}`, alice.token, randomBytes(1000))));
      expect(again.map((a) => a.status)).toEqual([201, 201]);
      for (const [i, body] of bodies.entries()) expect((await call(server, 'GET', `/v1/objects/chunks/slow${i}`, alice.token)).body.equals(body)).toBe(true);
      expect((await call(server, 'HEAD', '/v1/objects/chunks/third', alice.token)).status).toBe(404);
    } finally {
      await stop(server.child);
    }
  });

  it('answers a burst past --rate-limit with 429 RATE_LIMITED, and other accounts are unaffected', async () => {
    const data = newDataDir();
    const alice = await addAccount(data, 'alice');
    const bob = await addAccount(data, 'bob');
    const server = await serve(data, ['--rate-limit', '5']);
    try {
      const burst = await Promise.all(Array.from({ length: 40 }, () => call(server, 'HEAD', '/v1/objects/chunks/x', alice.token)));
      const limited = burst.filter((a) => a.status === 429);
      // The bucket holds twice the rate: about 10 pass, the rest are refused.
      expect(limited.length).toBeGreaterThanOrEqual(25);
      expect(burst.filter((a) => a.status === 404).length).toBeGreaterThanOrEqual(5);
      const codes = await Promise.all(Array.from({ length: 3 }, () => call(server, 'GET', '/v1/objects/chunks/x', alice.token)));
      expect(codes.map((a) => a.code)).toContain('RATE_LIMITED');
      const other = await Promise.all(Array.from({ length: 8 }, () => call(server, 'HEAD', '/v1/objects/chunks/x', bob.token)));
      expect(other.map((a) => a.status)).toEqual(Array(8).fill(404));
      // The bucket refills: a second later alice gets through again.
      await sleep(1_000);
      expect((await call(server, 'HEAD', '/v1/objects/chunks/x', alice.token)).status).toBe(404);
    } finally {
      await stop(server.child);
    }
  });
});

describe('coffer serve account commands while the server runs', () => {
  it('refuses a revoked token within 2 s, and lets a newly issued one in', async () => {
    const data = newDataDir();
    const alice = await addAccount(data, 'alice');
    const server = await serve(data);
    try {
      expect((await call(server, 'PUT', '/v1/objects/chunks/a', alice.token, Buffer.from('kept'))).status).toBe(201);
      const second = JSON.parse((await cofferOk(['serve', 'account', 'token', 'alice', '--data', data, '--json'])).stdout) as { token: string; tokens: number };
      expect(second.tokens).toBe(2);
      await cofferOk(['serve', 'account', 'revoke', 'alice', '--data', data]);
      const took = await within(2_000, async () => (await call(server, 'HEAD', '/v1/objects/chunks/a', alice.token)).status === 401);
      expect(took).toBeLessThan(2_000);
      expect((await call(server, 'GET', '/v1/objects/chunks/a', second.token)).code).toBe('UNAUTHORIZED');
      const third = JSON.parse((await cofferOk(['serve', 'account', 'token', 'alice', '--data', data, '--json'])).stdout) as { token: string };
      await within(2_000, async () => (await call(server, 'GET', '/v1/objects/chunks/a', third.token)).status === 200);
      expect((await call(server, 'GET', '/v1/objects/chunks/a', third.token)).body.toString()).toBe('kept');
      expect((await call(server, 'GET', '/v1/objects/chunks/a', alice.token)).status).toBe(401);
    } finally {
      await stop(server.child);
    }
  });

  it('applies a quota changed with `account set` without a restart', async () => {
    const data = newDataDir();
    const small = await addAccount(data, 'small', ['--quota-bytes', '1000', '--quota-objects', '5']);
    const server = await serve(data);
    try {
      expect((await call(server, 'PUT', '/v1/objects/chunks/a', small.token, randomBytes(800))).status).toBe(201);
      expect((await call(server, 'PUT', '/v1/objects/chunks/b', small.token, randomBytes(500))).code).toBe('QUOTA_EXCEEDED');
      await cofferOk(['serve', 'account', 'set', 'small', '--data', data, '--quota-bytes', '10K']);
      const took = await within(2_000, async () => (await call(server, 'PUT', '/v1/objects/chunks/b', small.token, randomBytes(500))).status === 201);
      expect(took).toBeLessThan(2_000);
      // Lowered again, and by objects: the next put is refused.
      await cofferOk(['serve', 'account', 'set', 'small', '--data', data, '--quota-objects', '2']);
      let attempt = 0;
      await within(2_000, async () => (await call(server, 'PUT', `/v1/objects/chunks/c${attempt++}`, small.token, randomBytes(10))).code === 'QUOTA_EXCEEDED');
      const list = JSON.parse((await cofferOk(['serve', 'account', 'list', '--data', data, '--json'])).stdout) as Record<string, unknown>[];
      expect(list).toEqual([{ id: small.id, name: 'small', quotaBytes: 10 * 1024, quotaObjects: 2, tokens: 1, created: expect.any(String) }]);
    } finally {
      await stop(server.child);
    }
  });

  it('says clearly when an account does not exist, with exit code 2', async () => {
    const data = newDataDir();
    await addAccount(data, 'alice');
    for (const args of [['revoke', 'nobody'], ['token', 'nobody'], ['set', 'nobody', '--quota-bytes', '1G'], ['remove', 'nobody', '--delete-objects']]) {
      const { code, stderr } = await import('./helpers/drive.js').then(({ coffer }) => coffer(['serve', 'account', ...args, '--data', data]));
      expect([args[0], code]).toEqual([args[0], 2]);
      expect(stderr).toMatch(/no account named "nobody" \(there are: alice\)/);
    }
    const text = (await cofferOk(['serve', 'account', 'list', '--data', data])).stdout;
    expect(text).toMatch(/^NAME\s+ID\s+QUOTA BYTES\s+QUOTA OBJECTS\s+TOKENS\s+CREATED\nalice\s+[0-9a-f]{32}\s+no limit\s+no limit\s+1\s+\d{4}-/);
    const hashes = (JSON.parse(readFileSync(join(data, 'accounts.json'), 'utf8')) as { accounts: { tokenHashes: string[] }[] }).accounts[0]!.tokenHashes;
    expect(text).not.toContain(hashes[0]);
  });

  it('removes an account and its objects only with --delete-objects', async () => {
    const data = newDataDir();
    const bob = await addAccount(data, 'bob');
    const { coffer } = await import('./helpers/drive.js');
    const refused = await coffer(['serve', 'account', 'remove', 'bob', '--data', data]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/--delete-objects/);
    expect(existsSync(join(data, 'accounts', bob.id))).toBe(true);
    await cofferOk(['serve', 'account', 'remove', 'bob', '--data', data, '--delete-objects']);
    expect(existsSync(join(data, 'accounts', bob.id))).toBe(false);
    expect(JSON.parse((await cofferOk(['serve', 'account', 'list', '--data', data, '--json'])).stdout)).toEqual([]);
  });

  it('loses no change when account commands run at once', async () => {
    const data = newDataDir();
    await addAccount(data, 'alice');
    await Promise.all([
      ...Array.from({ length: 6 }, (_, i) => cofferOk(['serve', 'account', 'add', `u${i}`, '--data', data])),
      ...Array.from({ length: 6 }, () => cofferOk(['serve', 'account', 'token', 'alice', '--data', data])),
    ]);
    const list = JSON.parse((await cofferOk(['serve', 'account', 'list', '--data', data, '--json'])).stdout) as { name: string; tokens: number }[];
    expect(list.map((a) => a.name).sort()).toEqual(['alice', 'u0', 'u1', 'u2', 'u3', 'u4', 'u5']);
    expect(list.find((a) => a.name === 'alice')!.tokens).toBe(7);
    expect(readdirSync(data).sort()).toEqual(['accounts', 'accounts.json']); // no lock or temp file left
  });
});

describe('coffer serve killed during uploads', () => {
  it('loses no acknowledged object, shows no partial one, and ignores what tmp/ holds', async () => {
    const data = newDataDir();
    const alice = await addAccount(data, 'alice', ['--quota-bytes', '1G']);
    let server = await serve(data, ['--max-uploads', '64']);
    const put = (key: string, body: Buffer) => call(server, 'PUT', `/v1/objects/${key}`, alice.token, body);
    // Objects that exist before: overwritten during the storm, so each must read back as the old or the new body.
    const before = new Map<string, Buffer>();
    for (let i = 0; i < 8; i++) {
      const body = randomBytes(randomInt(1, 256 * 1024));
      expect((await put(`old/o${i}`, body)).status).toBe(201);
      before.set(`old/o${i}`, body);
    }
    const sent = new Map<string, Buffer>();
    const acked = new Set<string>();
    const uploads: Promise<void>[] = [];
    const start = (key: string, body: Buffer, stallAt?: number) => {
      sent.set(key, body);
      const req = open(server, 'PUT', `/v1/objects/${key}`, alice.token, { 'content-length': body.length });
      const answer = collect(req);
      uploads.push(
        answer.then(
          (a) => void (a.status === 201 && acked.add(key)),
          () => {},
        ),
      );
      req.on('error', () => {});
      void (async () => {
        // Pieces with pauses, so that many uploads are mid-body when the server dies.
        for (let offset = 0; offset < body.length && !req.destroyed; offset += 64 * 1024) {
          if (stallAt !== undefined && offset >= stallAt) return; // never finishes
          await new Promise<void>((r) => req.write(body.subarray(offset, offset + 64 * 1024), () => r()));
          await sleep(randomInt(0, 20));
        }
        req.end();
      })().catch(() => {});
    };
    for (let i = 0; i < 48; i++) start(`new/n${i}`, randomBytes(randomInt(1, 2 * 1024 * 1024)));
    for (const key of before.keys()) start(key, randomBytes(randomInt(64 * 1024, 1024 * 1024)));
    for (let i = 0; i < 4; i++) start(`stalled/s${i}`, randomBytes(512 * 1024), 128 * 1024);
    // Kill once some uploads are acknowledged and others are still streaming.
    await within(30_000, () => acked.size >= 12);
    await stop(server.child, 'SIGKILL');
    await Promise.all(uploads);
    const inFlight = sent.size - acked.size;
    expect(inFlight).toBeGreaterThanOrEqual(4); // at least the stalled ones: the kill really was mid-stream
    const leftovers = tmpEntries(data, alice.id);
    expect(leftovers.length).toBeGreaterThan(0);

    server = await serve(data, ['--max-uploads', '64']);
    try {
      for (const key of acked) {
        const got = await call(server, 'GET', `/v1/objects/${key}`, alice.token);
        expect([key, got.status, got.body.equals(sent.get(key)!)]).toEqual([key, 200, true]);
      }
      // Every visible object is some whole body that was sent for its key, never a part.
      const listed = JSON.parse((await call(server, 'GET', '/v1/objects?limit=1000', alice.token)).body.toString()) as {
        objects: { key: string; size: number }[];
        next: string | null;
      };
      expect(listed.next).toBeNull();
      for (const { key, size } of listed.objects) {
        const got = (await call(server, 'GET', `/v1/objects/${key}`, alice.token)).body;
        expect(got.length).toBe(size);
        const whole = got.equals(sent.get(key)!) || (before.has(key) && got.equals(before.get(key)!));
        expect([key, whole]).toEqual([key, true]);
      }
      for (const key of sent.keys()) {
        if (!before.has(key) && !listed.objects.some((o) => o.key === key)) {
          expect((await call(server, 'HEAD', `/v1/objects/${key}`, alice.token)).status).toBe(404);
        }
      }
      expect(listed.objects.map((o) => o.key)).toEqual(expect.arrayContaining([...before.keys(), ...acked]));
      expect(listed.objects.some((o) => o.key.startsWith('stalled/') || o.key.includes('tmp'))).toBe(false);
      // tmp/ leftovers count for nothing: a quota of exactly the listed bytes plus 1,000 takes 1,000 bytes more, and not one more.
      const stored = listed.objects.reduce((sum, o) => sum + o.size, 0);
      // The restarted server cleared what the killed one left in tmp/ (it owns the data directory).
      expect(tmpEntries(data, alice.id)).toEqual([]);
      await cofferOk(['serve', 'account', 'set', 'alice', '--data', data, '--quota-bytes', String(stored + 1000)]);
      // The new quota is in force once 1,001 bytes more are refused; then exactly 1,000 fit.
      await within(3_000, async () => {
        if ((await put('fill/probe', randomBytes(1001))).code === 'QUOTA_EXCEEDED') return true;
        await call(server, 'DELETE', '/v1/objects/fill/probe', alice.token); // stored under the old quota: take it back
        return false;
      });
      expect((await put('fill/a', randomBytes(1000))).status).toBe(201);
      expect((await put('fill/b', Buffer.alloc(1))).code).toBe('QUOTA_EXCEEDED');
    } finally {
      await stop(server.child);
    }
  }, 120_000);
});
