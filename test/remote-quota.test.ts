/**
 * A drive on a `coffer serve` account with a byte quota, through a real mount: writes the
 * account could not take fail with ENOSPC before they are acknowledged (one file after
 * another, and in the middle of one large write), everything acknowledged reads back and
 * reaches the remote, status and statfs show the quota, and raising the quota lets writes
 * resume without a remount. An account without a quota behaves as before.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CofferError } from '../src/errors.js';
import type { RemoteBackend } from '../src/remote/backend.js';
import { FaultyBackend } from '../src/remote/faulty-backend.js';
import { FileBackend } from '../src/remote/file-backend.js';
import { HttpBackend } from '../src/remote/http-backend.js';
import { openBackend } from '../src/remote/open-backend.js';
import { RateLimitedBackend } from '../src/remote/rate-limited-backend.js';
import { RetryingBackend } from '../src/remote/retrying-backend.js';
import { cofferOk, Workspace, writeAcknowledged } from './helpers/drive.js';
import { startServe, type ServeProcess } from './helpers/serve.js';

const MiB = 1024 * 1024;

let dir: string;
let data: string;
let server: ServeProcess | undefined;
let base = '';
const workspaces: Workspace[] = [];

async function addAccount(name: string, extra: string[] = []): Promise<string> {
  const { stdout } = await cofferOk(['serve', 'account', 'add', name, '--data', data, '--json', ...extra]);
  return (JSON.parse(stdout) as { token: string }).token;
}

/** Raises an account's quota while the server runs (it applies the change within a second). */
async function setQuotaBytes(name: string, quotaBytes: number): Promise<void> {
  await cofferOk(['serve', 'account', 'set', name, '--data', data, '--quota-bytes', String(quotaBytes)]);
}


interface SpaceStatus {
  usedBytes: number;
  quotaBytes: number;
  unsentBytes: number;
  freeBytes: number | null;
  full: boolean;
}

async function remoteSpace(mnt: string, env: NodeJS.ProcessEnv): Promise<SpaceStatus | null> {
  return (JSON.parse((await cofferOk(['status', mnt, '--json'], { env })).stdout) as { remoteSpace: SpaceStatus | null }).remoteSpace;
}

async function driveOn(account: string, env: NodeJS.ProcessEnv): Promise<{ ws: Workspace; url: string }> {
  const ws = new Workspace(`coffer-quota-${account}-`);
  workspaces.push(ws);
  const url = `${base}/${account}-vault/`;
  await cofferOk(['init', ws.vault, '--remote', url], { env });
  await ws.mount(ws.mnt, env);
  return { ws, url };
}

beforeAll(async () => {
  dir = fs.mkdtempSync(join(tmpdir(), 'coffer-quota-'));
  data = join(dir, 'data');
  fs.mkdirSync(data); // accounts come later, while the server runs
  server = await startServe(['--listen', '127.0.0.1:0', '--data', data]);
  base = server.base;
});

afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

afterAll(async () => {
  await server?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('GET /v1/usage and RemoteBackend.space', () => {
  it("reports the account's usage and quotas, through every wrapper", async () => {
    const token = await addAccount('counted', ['--quota-bytes', '5000', '--quota-objects', '7']);
    const remote = openBackend(`${base}/some/vault/`, { env: { COFFER_TOKEN: token } });
    expect(await remote.space!()).toEqual({ usedBytes: 0, usedObjects: 0, quotaBytes: 5000, quotaObjects: 7 });
    await remote.put('chunks/ab/abcd', Buffer.alloc(1234));
    // The account's usage, whatever prefix the vault lives under.
    const other = new HttpBackend({ url: `${base}/another/`, token });
    expect(await other.space()).toEqual({ usedBytes: 1234, usedObjects: 1, quotaBytes: 5000, quotaObjects: 7 });
    const wrapped = new RateLimitedBackend(new FaultyBackend(new RetryingBackend(other), {}), { uploadBytesPerSecond: 1e6 });
    expect((await wrapped.space())?.usedBytes).toBe(1234);
    // Backends whose store keeps no quota cannot tell, and neither can wrappers around them.
    expect((new FileBackend(join(dir, 'file-remote')) as RemoteBackend).space).toBeUndefined();
    expect(await new RetryingBackend(new FileBackend(join(dir, 'file-remote'))).space()).toBeUndefined();
    const refused = await new HttpBackend({ url: `${base}/`, token: 'cft_wrong' }).space().then(
      () => undefined,
      (err: CofferError) => err.code,
    );
    expect(refused).toBe('REMOTE_UNAUTHORIZED');
    const post = await fetch(`${base}/v1/usage`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(post.status).toBe(405);
  });
});

describe('a drive on an account with a byte quota', () => {
  it('fails writes with ENOSPC before the quota, loses nothing acknowledged, and resumes when the quota is raised', async () => {
    const QUOTA = 8 * MiB;
    const env = { COFFER_TOKEN: await addAccount('filling', ['--quota-bytes', String(QUOTA)]) };
    const { ws, url } = await driveOn('filling', env);

    // df shows the account's quota as the filesystem's size.
    const before = fs.statfsSync(ws.mnt);
    expect(before.blocks * before.bsize).toBe(QUOTA);
    expect(before.bavail * before.bsize).toBeLessThan(QUOTA);

    const acknowledged = new Map<string, Buffer>();
    let failure: { name: string; written: number; error?: string } | undefined;
    for (let i = 0; i < 16 && !failure; i++) {
      const body = randomBytes(MiB);
      const result = writeAcknowledged(ws.path(`f${i}`), body);
      if (result.error) failure = { name: `f${i}`, ...result };
      // A write cut short keeps what it acknowledged, as on a full disk.
      acknowledged.set(`f${i}`, body.subarray(0, result.written));
    }
    expect(failure?.error).toBe('ENOSPC');
    const total = [...acknowledged.values()].reduce((sum, body) => sum + body.length, 0);
    // Refused before the quota, and not long before it (the margin is for metadata and sealing).
    expect(total).toBeLessThanOrEqual(QUOTA);
    expect(total).toBeGreaterThan(QUOTA - 3 * MiB);

    // Everything acknowledged reads back; status says the remote is full.
    for (const [name, body] of acknowledged) expect(fs.readFileSync(ws.path(name)).equals(body), name).toBe(true);
    const full = await remoteSpace(ws.mnt, env);
    expect(full).toMatchObject({ quotaBytes: QUOTA, full: true });
    expect(full!.freeBytes).toBeLessThan(MiB);
    expect((await cofferOk(['status', ws.mnt], { env })).stdout).toMatch(/^remote full: the account's quota of 8\.0 MiB is used; writes fail with ENOSPC/m);
    // Smaller steps fail too, and namespace changes still work.
    expect(writeAcknowledged(ws.path('more'), randomBytes(MiB)).error).toBe('ENOSPC');
    fs.mkdirSync(ws.path('dir'));
    fs.writeFileSync(ws.path('dir', 'empty'), '');
    fs.renameSync(ws.path('dir', 'empty'), ws.path('dir', 'still-empty'));
    fs.unlinkSync(ws.path('more'));

    // Room appears: writes resume without a remount. The server applies the new quota within a
    // second; the drive asks again before refusing a write, so the very first write succeeds.
    const RAISED = 64 * MiB;
    await setQuotaBytes('filling', RAISED);
    await new Promise((r) => setTimeout(r, 2500));
    const after = randomBytes(2 * MiB);
    expect(writeAcknowledged(ws.path('after'), after)).toEqual({ written: after.length });
    acknowledged.set('after', after);
    const raised = fs.statfsSync(ws.mnt);
    expect(raised.blocks * raised.bsize).toBe(RAISED);
    expect(await remoteSpace(ws.mnt, env)).toMatchObject({ quotaBytes: RAISED, full: false });

    await cofferOk(['sync', ws.mnt, '--wait'], { env, timeoutMs: 90_000 });
    await ws.unmount();

    // A fresh machine with the server and the passphrase sees every acknowledged byte.
    const copy = new Workspace('coffer-quota-clone-');
    workspaces.push(copy);
    await cofferOk(['clone', url, copy.vault], { env });
    await copy.mount(copy.mnt, env);
    for (const [name, body] of acknowledged) expect(fs.readFileSync(copy.path(name)).equals(body), name).toBe(true);
    expect(fs.readdirSync(copy.path('dir'))).toEqual(['still-empty']);
  }, 300_000);

  it('fails one large write with ENOSPC in the middle and keeps what it acknowledged', async () => {
    const QUOTA = 6 * MiB;
    const env = { COFFER_TOKEN: await addAccount('large', ['--quota-bytes', String(QUOTA)]) };
    const { ws } = await driveOn('large', env);

    const body = randomBytes(24 * MiB);
    const result = writeAcknowledged(ws.path('large'), body);
    expect(result.error).toBe('ENOSPC');
    // Mid-write: part of the same write(2) was acknowledged before the refusal.
    expect(result.written).toBeGreaterThan(MiB);
    expect(result.written).toBeLessThanOrEqual(QUOTA);
    expect(fs.statSync(ws.path('large')).size).toBe(result.written);
    expect(fs.readFileSync(ws.path('large')).equals(body.subarray(0, result.written))).toBe(true);

    // Acknowledged means kept: across a remount, and onto the remote once there is room.
    await ws.unmount();
    await ws.mount(ws.mnt, env);
    expect(fs.readFileSync(ws.path('large')).equals(body.subarray(0, result.written))).toBe(true);
    await setQuotaBytes('large', 4 * QUOTA);
    await cofferOk(['sync', ws.mnt, '--wait'], { env, timeoutMs: 90_000 });
    const synced = JSON.parse((await cofferOk(['status', ws.mnt, '--json'], { env })).stdout) as { pendingChunks: number; remoteSpace: SpaceStatus };
    expect(synced.pendingChunks).toBe(0);
    expect(synced.remoteSpace.usedBytes).toBeGreaterThan(result.written);
  }, 240_000);
});

describe('a drive on an account without a quota', () => {
  it('reports the host disk in statfs and accepts writes as before', async () => {
    const env = { COFFER_TOKEN: await addAccount('unlimited') };
    const { ws } = await driveOn('unlimited', env);
    const mount = fs.statfsSync(ws.mnt);
    const disk = fs.statfsSync(ws.vault);
    expect(mount.bsize).toBe(disk.bsize);
    expect(mount.blocks).toBe(disk.blocks);
    const body = randomBytes(3 * MiB);
    expect(writeAcknowledged(ws.path('f'), body)).toEqual({ written: body.length });
    expect(await remoteSpace(ws.mnt, env)).toMatchObject({ quotaBytes: 0, freeBytes: null, full: false });
    expect((await cofferOk(['status', ws.mnt], { env })).stdout).not.toMatch(/remote full/);
    await cofferOk(['sync', ws.mnt, '--wait'], { env, timeoutMs: 90_000 });
    expect(fs.readFileSync(ws.path('f')).equals(body)).toBe(true);
  }, 240_000);
});
