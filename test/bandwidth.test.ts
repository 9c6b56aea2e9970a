/**
 * Bandwidth limits under a real mount. The property checked is a lower bound, not a speed:
 * moving N bytes through a limit of L bytes per second cannot take less than N / L seconds,
 * less the one second's worth the bucket may have saved up while the mount sat idle — and
 * the bytes must arrive intact. (Timed from the mount's start the bound would be N / L
 * exactly, the buckets starting empty, but unlocking alone takes seconds and would hide a
 * limit that does nothing.) Flags given to `mount` override the config file.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cofferOk, Workspace } from './helpers/drive.js';

const KiB = 1024;
/** Two chunks: a full one and part of the next. */
const N = 1024 * KiB + 300 * KiB;

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

async function remoteOf(target: string): Promise<string> {
  return (JSON.parse((await cofferOk(['status', target, '--json'])).stdout) as { remote: string }).remote;
}

describe('bandwidth limits', () => {
  it('uploads no faster than --upload-limit and downloads no faster than downloadLimit; the data arrives intact', async () => {
    const ws = new Workspace('coffer-bw-');
    workspaces.push(ws);
    const remote = `file://${join(ws.dir, 'remote')}`;
    await ws.init(['--remote', remote]);
    ws.editConfig({ uploadLimit: '64M' }); // the flag below wins
    const data = randomBytes(N);

    const uploadLimit = 256 * KiB;
    await ws.mount(ws.mnt, undefined, ['--upload-limit', '256K']);
    expect(await remoteOf(ws.mnt)).toBe(`${remote} (limited: upload 256 KiB/s)`);
    const started = performance.now();
    fs.writeFileSync(ws.path('f'), data);
    await cofferOk(['sync', ws.mnt, '--wait']);
    const uploadSeconds = (performance.now() - started) / 1000;
    expect(uploadSeconds, 'writing and syncing N bytes took at least N / limit - 1 s').toBeGreaterThanOrEqual(N / uploadLimit - 1);
    await ws.unmount();
    console.log(`upload: ${N} bytes written and synced in ${uploadSeconds.toFixed(2)} s at ${uploadLimit} B/s (bound ${(N / uploadLimit - 1).toFixed(2)} s)`);

    // Another machine, with nothing cached: every byte of the file comes from the remote.
    const clone = new Workspace('coffer-bw-clone-');
    workspaces.push(clone);
    await cofferOk(['clone', remote, clone.vault]);
    clone.editConfig({ downloadLimit: '512K' });
    const downloadLimit = 512 * KiB;
    await clone.mount();
    expect(await remoteOf(clone.mnt)).toBe(`${remote} (limited: download 512 KiB/s)`);
    const readStarted = performance.now();
    const back = fs.readFileSync(clone.path('f'));
    const downloadSeconds = (performance.now() - readStarted) / 1000;
    expect(back.equals(data), 'the file read back on the other machine').toBe(true);
    expect(downloadSeconds, 'reading N bytes from the remote took at least N / limit - 1 s').toBeGreaterThanOrEqual(N / downloadLimit - 1);
    await clone.unmount();
    console.log(`download: ${N} bytes read in ${downloadSeconds.toFixed(2)} s at ${downloadLimit} B/s (bound ${(N / downloadLimit - 1).toFixed(2)} s)`);

    // A flag of 0 lifts the config's limit for that mount.
    await clone.mount(clone.mnt, undefined, ['--download-limit', '0']);
    expect(await remoteOf(clone.mnt)).toBe(remote);
    expect(fs.readFileSync(clone.path('f')).equals(data)).toBe(true);
    await clone.unmount();
  });
});
