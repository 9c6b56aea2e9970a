/**
 * Every released format version keeps a golden vault in test/fixtures/vault-v<N>/ (written once by
 * scripts/make-golden-vault.mjs, never regenerated). Today's code must mount each one and show the
 * recorded tree, and a clone of its remote must show the same tree: nothing lost.
 */
import { cpSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { cofferOk, ROOT, Workspace } from '../helpers/drive.js';
// @ts-expect-error: a plain .mjs module shared with the fixture writer
import { describeTree } from '../../scripts/lib/golden-tree.mjs';

const FIXTURES = join(ROOT, 'test', 'fixtures');
const CURRENT_FORMAT = 2;
const versions = readdirSync(FIXTURES)
  .map((name) => /^vault-v(\d+)$/.exec(name)?.[1])
  .filter((v): v is string => v !== undefined)
  .map(Number)
  .sort((a, b) => a - b);

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

interface Golden {
  version: number;
  passphrase: string;
  tree: Record<string, unknown>;
}

/** A copy of golden vault `version` in a new workspace, its embedded remote's URL pointed at the copy. */
function copyGolden(version: number): { ws: Workspace; golden: Golden; remoteUrl: string } {
  const ws = new Workspace('coffer-golden-');
  workspaces.push(ws);
  cpSync(join(FIXTURES, `vault-v${version}`, 'vault'), ws.vault, { recursive: true });
  const remoteUrl = pathToFileURL(join(ws.vault, 'remote')).href;
  ws.editConfig({ remote: remoteUrl });
  const golden = JSON.parse(readFileSync(join(FIXTURES, `vault-v${version}`, 'tree.json'), 'utf8')) as Golden;
  return { ws, golden, remoteUrl };
}

describe('golden vaults', () => {
  it('there is one for format 1 at least', () => {
    expect(versions).toContain(1);
  });

  for (const version of versions) {
    it(`format ${version}: mounts with every file, link, mode, time and xattr as written`, async () => {
      const { ws, golden } = copyGolden(version);
      await ws.mount(undefined, { COFFER_PASSPHRASE: golden.passphrase });
      expect(describeTree(ws.mnt)).toEqual(golden.tree);
      await ws.unmount();
      // And again after the first mount has done whatever it does to the vault.
      await ws.mount(undefined, { COFFER_PASSPHRASE: golden.passphrase });
      expect(describeTree(ws.mnt)).toEqual(golden.tree);
    });

    it(`format ${version}: a clone of its remote shows the same tree`, async () => {
      const { ws, golden, remoteUrl } = copyGolden(version);
      // Mounted once first, as a user upgrading the device would.
      await ws.mount(undefined, { COFFER_PASSPHRASE: golden.passphrase });
      await cofferOk(['sync', ws.vault, '--wait', '--timeout', '60']);
      await ws.unmount();
      // The first mount upgraded the vault and its remote to the current format.
      expect(JSON.parse(readFileSync(join(ws.vault, 'vault.json'), 'utf8')).version).toBe(CURRENT_FORMAT);
      expect(JSON.parse(readFileSync(join(ws.vault, 'remote', 'coffer-vault.json'), 'utf8')).version).toBe(CURRENT_FORMAT);
      const other = new Workspace('coffer-golden-clone-');
      workspaces.push(other);
      await cofferOk(['clone', remoteUrl, other.vault], { passphrase: golden.passphrase });
      await other.mount(undefined, { COFFER_PASSPHRASE: golden.passphrase });
      expect(describeTree(other.mnt)).toEqual(golden.tree);
    });
  }

  it('format 1: coffer upgrade upgrades without a mount, and a clone then shows the same tree', async () => {
    const { ws, golden, remoteUrl } = copyGolden(1);
    await cofferOk(['upgrade', ws.vault], { passphrase: golden.passphrase });
    expect(JSON.parse(readFileSync(join(ws.vault, 'remote', 'coffer-vault.json'), 'utf8')).version).toBe(CURRENT_FORMAT);
    expect((await cofferOk(['upgrade', ws.vault], { passphrase: golden.passphrase })).stderr).toMatch(/already in format 2/);
    const other = new Workspace('coffer-golden-clone-');
    workspaces.push(other);
    await cofferOk(['clone', remoteUrl, other.vault], { passphrase: golden.passphrase });
    await other.mount(undefined, { COFFER_PASSPHRASE: golden.passphrase });
    expect(describeTree(other.mnt)).toEqual(golden.tree);
  });

  it('format 1: a remote no device has upgraded yet clones, and its first mount upgrades it', async () => {
    const { ws, golden, remoteUrl } = copyGolden(1);
    const other = new Workspace('coffer-golden-clone-');
    workspaces.push(other);
    await cofferOk(['clone', remoteUrl, other.vault, '--device-name', 'second'], { passphrase: golden.passphrase });
    await other.mount(undefined, { COFFER_PASSPHRASE: golden.passphrase });
    expect(describeTree(other.mnt)).toEqual(golden.tree);
    await cofferOk(['sync', other.vault, '--wait', '--timeout', '60']);
    expect(JSON.parse(readFileSync(join(ws.vault, 'remote', 'coffer-vault.json'), 'utf8')).version).toBe(CURRENT_FORMAT);
    // The original device, still in format 1 locally, upgrades at its mount and converges with it.
    await ws.mount(undefined, { COFFER_PASSPHRASE: golden.passphrase });
    await cofferOk(['sync', ws.vault, '--wait', '--timeout', '60']);
    await cofferOk(['sync', other.vault, '--wait', '--timeout', '60']);
    expect(describeTree(ws.mnt)).toEqual(golden.tree);
    expect(describeTree(other.mnt)).toEqual(golden.tree);
  });
});
