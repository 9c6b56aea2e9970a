/**
 * A local index that is damaged or gone: the daemon refuses to mount it and says how to
 * recover; `coffer rebuild-index` restores it from the remote and deletes nothing.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { coffer, cofferOk, isMounted, Workspace } from './helpers/drive.js';

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

async function publishedVault(): Promise<{ ws: Workspace; remote: string; published: Buffer; late: Buffer }> {
  const ws = new Workspace();
  workspaces.push(ws);
  const remote = join(ws.dir, 'remote');
  await ws.init(['--remote', `file://${remote}`]);
  await ws.mount();
  const published = randomBytes(1_500_000);
  fs.writeFileSync(ws.path('published'), published);
  await cofferOk(['sync', ws.mnt, '--wait']);
  // Written while the remote is away: only the local cache has it.
  fs.renameSync(remote, `${remote}.away`);
  fs.writeFileSync(remote, 'down');
  const late = randomBytes(700_000);
  fs.writeFileSync(ws.path('late'), late);
  await ws.unmount();
  fs.rmSync(remote);
  fs.renameSync(`${remote}.away`, remote);
  return { ws, remote, published, late };
}

async function expectRefusedThenRebuilt(ws: Workspace, published: Buffer, late: Buffer): Promise<void> {
  const refused = await coffer(['mount', ws.vault, ws.mnt]);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toMatch(/index .* (damaged|missing)/);
  expect(refused.stderr).toMatch(/coffer rebuild-index/);
  expect(isMounted(ws.mnt)).toBe(false);

  const rebuilt = await cofferOk(['rebuild-index', ws.vault]);
  expect(rebuilt.stderr).toMatch(/Rebuilt the index from \d+ journal entries/);
  expect(rebuilt.stderr).toMatch(/1 cached chunks .* moved to .*lost\+found/);
  const kept = fs.readdirSync(join(ws.vault, 'lost+found', 'chunks'));
  expect(kept).toHaveLength(1);
  expect(fs.statSync(join(ws.vault, 'lost+found', 'chunks', kept[0]!)).size).toBeGreaterThan(late.length);

  await ws.mount();
  expect(fs.readFileSync(ws.path('published')).equals(published)).toBe(true);
  expect(fs.existsSync(ws.path('late'))).toBe(false);
  await ws.unmount();
  expect((await coffer(['fsck', ws.vault])).code).toBe(0);
}

describe('a damaged or missing index', () => {
  it('refuses a corrupted index and rebuilds it from the remote, keeping the damaged file', async () => {
    const { ws, published, late } = await publishedVault();
    const index = join(ws.vault, 'index.db');
    const bytes = fs.readFileSync(index);
    randomBytes(4096).copy(bytes, 0);
    fs.writeFileSync(index, bytes);
    await expectRefusedThenRebuilt(ws, published, late);
    expect(fs.readdirSync(ws.vault).some((f) => f.startsWith('index.db.damaged-'))).toBe(true);
  });

  it('refuses a deleted index and rebuilds it from the remote', async () => {
    const { ws, published, late } = await publishedVault();
    fs.rmSync(join(ws.vault, 'index.db'));
    await expectRefusedThenRebuilt(ws, published, late);
  });
});
