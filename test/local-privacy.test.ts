/**
 * Other users of this machine learn nothing from a vault: its directory, index, cache, state and
 * logs are its owner's alone, and a vault made by an older Coffer is tightened at mount.
 * Checked as uid 65534 (nobody) from a directory everyone may enter, so that only the vault's
 * own modes stand in the way.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Workspace, cofferOk, ensureBuilt } from './helpers/drive.js';

ensureBuilt();

const NOBODY = 65534;

/** What uid 65534 manages to read of `path` (a file's bytes, or a directory's names). */
function asNobody(path: string): { ok: boolean; stderr: string } {
  const command = fs.statSync(path).isDirectory() ? ['ls', path] : ['cat', path];
  const result = spawnSync(command[0]!, command.slice(1), { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
  return { ok: result.status === 0, stderr: result.stderr };
}

/** Every path in the vault directory, the directory itself first. */
function everything(dir: string): string[] {
  return [dir, ...fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((p) => join(dir, p))];
}

const openToOthers = (path: string) => (fs.lstatSync(path).mode & 0o077) !== 0;

describe('privacy on this machine', () => {
  let ws: Workspace;
  afterEach(async () => ws?.cleanup());

  async function vaultWithData(): Promise<void> {
    ws = new Workspace();
    fs.chmodSync(ws.dir, 0o755); // anyone may come this far; the vault's modes must stop them
    await ws.init();
    await ws.mount();
    fs.writeFileSync(ws.path('secret.txt'), 'the plans');
    await cofferOk(['sync', ws.mnt, '--wait']);
    await ws.unmount();
  }

  it('creates the vault directory, index, cache, state and logs readable by their owner only', async () => {
    await vaultWithData();
    const paths = everything(ws.vault);
    expect(paths.some((p) => p.endsWith('index.db'))).toBe(true);
    expect(paths.some((p) => p.endsWith('daemon.log'))).toBe(true);
    expect(paths.filter(openToOthers)).toEqual([]);
    for (const path of [ws.vault, join(ws.vault, 'index.db'), ws.log, join(ws.vault, 'config.json')]) {
      expect(asNobody(path), path).toMatchObject({ ok: false });
    }
  });

  it('tightens a vault whose files others could read, at mount', async () => {
    await vaultWithData();
    for (const path of everything(ws.vault)) fs.chmodSync(path, fs.statSync(path).isDirectory() ? 0o755 : 0o644);
    expect(asNobody(join(ws.vault, 'index.db')).ok).toBe(true); // the test can see a failure
    await ws.mount();
    // Inside cache/ and remote/ (thousands of files) the directories' own modes are what stop others.
    const inside = (dir: string, p: string) => p.startsWith(join(ws.vault, dir) + '/');
    expect(everything(ws.vault).filter((p) => !inside('cache', p) && !inside('remote', p)).filter(openToOthers)).toEqual([]);
    for (const path of [ws.vault, join(ws.vault, 'index.db'), ws.log]) expect(asNobody(path), path).toMatchObject({ ok: false });
    await ws.unmount();
  });
});
