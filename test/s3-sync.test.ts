/**
 * The drive on an S3 remote (a real Ceph RGW): recovery on a fresh machine, and
 * offline work while the store is unreachable, then catching up.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { coffer, cofferOk, Workspace } from './helpers/drive.js';
import { exportRgwCredentials, startRgw, type RgwServer } from './helpers/rgw.js';

let rgw: RgwServer;
const workspaces: Workspace[] = [];

beforeAll(async () => {
  rgw = await startRgw();
  exportRgwCredentials(rgw);
}, 720_000);

afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

afterAll(async () => {
  await rgw?.stop();
}, 120_000);

function digest(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    out[path.slice(root.length)] = entry.isFile() ? createHash('sha256').update(fs.readFileSync(path)).digest('hex') : 'dir';
  }
  return out;
}

/**
 * A TCP relay in front of RGW that a test can cut and restore, like a network going away.
 * It runs in the test process: reads through the mount that need the store must be
 * asynchronous, or they would block the relay they wait for.
 */
class Relay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: URL) {}

  async up(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = createConnection(Number(this.target.port), this.target.hostname);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async down(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }
}

describe('an S3 remote', () => {
  it('recovers every file after the vault directory is deleted', async () => {
    const ws = new Workspace();
    workspaces.push(ws);
    const url = `s3://${rgw.bucket}/vault-${randomBytes(4).toString('hex')}`;
    await ws.init(['--remote', url, '--s3-endpoint', rgw.endpoint]);
    await ws.mount();
    fs.mkdirSync(ws.path('a/b'), { recursive: true });
    for (let i = 0; i < 10; i++) fs.writeFileSync(ws.path('a/b', `f${i}`), randomBytes(i * 300_000));
    fs.writeFileSync(ws.path('top.txt'), 'on s3');
    const before = digest(ws.mnt);
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
    fs.rmSync(ws.vault, { recursive: true });
    await cofferOk(['clone', url, ws.vault, '--s3-endpoint', rgw.endpoint]);
    await ws.mount();
    expect(digest(ws.mnt)).toEqual(before);
  });

  it('works offline while the store is unreachable and catches up when it returns', async () => {
    const relay = new Relay(new URL(rgw.endpoint));
    await relay.up();
    const ws = new Workspace();
    workspaces.push(ws);
    const url = `s3://${rgw.bucket}/vault-${randomBytes(4).toString('hex')}`;
    const endpoint = `http://127.0.0.1:${relay.port}`;
    try {
      await ws.init(['--remote', url, '--s3-endpoint', endpoint]);
      await ws.mount();
      fs.writeFileSync(ws.path('before'), randomBytes(1_200_000));
      await cofferOk(['sync', ws.mnt, '--wait']);
      await ws.unmount();
      // A second machine: a clone has no chunks, so reading needs the store.
      const clone = join(ws.dir, 'clone');
      const mnt = join(ws.dir, 'clone-mnt');
      fs.mkdirSync(mnt);
      await cofferOk(['clone', url, clone, '--s3-endpoint', endpoint]);
      await relay.down();
      await cofferOk(['mount', clone, mnt]);
      try {
        const started = Date.now();
        const cat = spawnSync('cat', [join(mnt, 'before')]);
        expect(cat.stderr.toString()).toMatch(/Input\/output error/);
        expect(Date.now() - started).toBeLessThan(14_000);
        const offline = randomBytes(2_500_000);
        fs.writeFileSync(join(mnt, 'offline'), offline);
        expect(fs.readFileSync(join(mnt, 'offline')).equals(offline)).toBe(true);
        const status = JSON.parse((await cofferOk(['status', mnt, '--json'])).stdout);
        expect(status.pendingChunks).toBe(3);
        await relay.up();
        await cofferOk(['sync', mnt, '--wait']);
        expect(JSON.parse((await cofferOk(['status', mnt, '--json'])).stdout).pendingChunks).toBe(0);
        // Asynchronous on purpose: the relay runs in this process and must keep forwarding while the read waits.
        expect((await fs.promises.readFile(join(mnt, 'before'))).length).toBe(1_200_000);
      } finally {
        await coffer(['unmount', mnt]);
      }
    } finally {
      await relay.down();
    }
  });

  it('refuses missing credentials with a clear message', async () => {
    const ws = new Workspace();
    workspaces.push(ws);
    const result = await coffer(['init', ws.vault, '--remote', `s3://${rgw.bucket}/x`, '--s3-endpoint', rgw.endpoint], {
      env: { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' },
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/AWS_ACCESS_KEY_ID/);
  });
});
