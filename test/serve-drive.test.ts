/**
 * A vault on `coffer serve` when the server dies: killed (SIGKILL) while the drive uploads,
 * then restarted on the same data directory and port. The drive retries, and everything it
 * wrote reaches the server and comes back on a fresh machine byte for byte.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cofferOk, Workspace } from './helpers/drive.js';
import { addServeAccount, startServe, type ServeProcess } from './helpers/serve.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('a vault on coffer serve when the server is killed during uploads', () => {
  it('uploads everything once the server is back, and a clone reads every file identical', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'coffer-serve-kill-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const data = join(dir, 'data');
    const token = await addServeAccount(['--data', data], 'alice');
    let server: ServeProcess = await startServe(['--listen', '127.0.0.1:0', '--data', data]);
    cleanups.push(() => server.stop());
    const env = { COFFER_TOKEN: token };
    const url = `${server.base}/vault/`;
    const ws = new Workspace('coffer-serve-kill-drive-');
    const copy = new Workspace('coffer-serve-kill-clone-');
    cleanups.push(() => ws.cleanup(), () => copy.cleanup());

    await cofferOk(['init', ws.vault, '--remote', url], { env });
    // Slow uploads, so the server dies with some done and others under way.
    await ws.mount(ws.mnt, env, ['--upload-limit', '1M']);
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 12; i++) {
      const body = randomBytes(300_000 + i * 7_001);
      writeFileSync(ws.path(`file-${i}.bin`), body);
      files.set(`file-${i}.bin`, body);
    }
    await new Promise((r) => setTimeout(r, 1500));
    const midway = JSON.parse((await cofferOk(['status', ws.vault, '--json'])).stdout) as { pendingChunks: number };
    expect(midway.pendingChunks).toBeGreaterThan(0);
    await server.stop('SIGKILL');

    // Writes go on while the server is down: they wait in the cache.
    const late = randomBytes(123_456);
    writeFileSync(ws.path('written-while-down.bin'), late);
    files.set('written-while-down.bin', late);
    await new Promise((r) => setTimeout(r, 1000));

    server = await startServe(['--listen', `127.0.0.1:${server.port}`, '--data', data]);
    await cofferOk(['sync', ws.mnt, '--wait'], { env, timeoutMs: 180_000 });
    await ws.unmount();

    await cofferOk(['clone', url, copy.vault], { env });
    await copy.mount(copy.mnt, env);
    for (const [name, body] of files) expect([name, readFileSync(copy.path(name)).equals(body)]).toEqual([name, true]);
    await copy.unmount();
  }, 300_000);
});
