/**
 * Several devices on one vault, each a daemon of its own with its own vault directory and mount,
 * against one file:// remote: they see each other's changes while mounted, concurrent changes
 * merge the same way everywhere without losing an edit, and `coffer devices` lists them.
 */
import { mkdirSync, opendirSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cofferOk, Workspace, waitFor } from '../helpers/drive.js';
// @ts-expect-error: a plain .mjs module shared with the fixture writer
import { describeTree } from '../../scripts/lib/golden-tree.mjs';

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

interface Device {
  ws: Workspace;
  name: string;
  p: (...parts: string[]) => string;
}

/** `n` devices of one new vault on a file:// remote, all mounted; the first made it, the others are clones. */
async function devices(n: number): Promise<Device[]> {
  const first = new Workspace('coffer-dev-');
  workspaces.push(first);
  const url = `file://${join(first.dir, 'remote')}`;
  await first.init(['--remote', url]);
  first.editConfig({ pollIntervalMs: 500 });
  const all: Device[] = [{ ws: first, name: 'one', p: (...parts) => first.path(...parts) }];
  for (let i = 1; i < n; i++) {
    const ws = new Workspace('coffer-dev-');
    workspaces.push(ws);
    const name = ['one', 'two', 'three', 'four'][i]!;
    await cofferOk(['clone', url, ws.vault, '--device-name', name]);
    ws.editConfig({ pollIntervalMs: 500 });
    all.push({ ws, name, p: (...parts) => ws.path(...parts) });
  }
  for (const d of all) await d.ws.mount();
  return all;
}

/** Every device publishes, then every device reads the others: rounds until nothing moves. */
async function settle(all: Device[]): Promise<void> {
  for (let round = 0; round < 2; round++) {
    for (const d of all) await cofferOk(['sync', d.ws.vault, '--wait', '--timeout', '60']);
  }
}

function converged(all: Device[]): Record<string, unknown> {
  const trees = all.map((d) => describeTree(d.ws.mnt) as Record<string, unknown>);
  for (const tree of trees.slice(1)) expect(tree).toEqual(trees[0]);
  return trees[0]!;
}

const CONFLICT = /^(.+) \(conflicted copy \d{4}-\d{2}-\d{2} \d{6} from (.+)\)(\.[^.]*)?$/;

describe('two devices', () => {
  it("each sees the other's changes while mounted, also in a directory a program has open", async () => {
    const [a, b] = await devices(2);
    mkdirSync(a!.p('shared'));
    writeFileSync(a!.p('shared', 'from-a.txt'), 'written on one\n');
    await waitFor('b to see a file written on a', () => existsSync(b!.p('shared', 'from-a.txt')));
    expect(readFileSync(b!.p('shared', 'from-a.txt'), 'utf8')).toBe('written on one\n');
    // A program on b holds the folder open; a file a adds appears when it reads the folder again.
    const dir = opendirSync(b!.p('shared'));
    try {
      writeFileSync(a!.p('shared', 'second.txt'), 'two\n');
      await waitFor('the open folder on b to list the new file', () => readdirSync(b!.p('shared')).includes('second.txt'));
    } finally {
      dir.closeSync();
    }
    writeFileSync(b!.p('from-b.txt'), 'written on two\n');
    await waitFor('a to see a file written on b', () => existsSync(a!.p('from-b.txt')));
    await settle([a!, b!]);
    converged([a!, b!]);
  });

  it('the same file edited on both: both edits are kept, one under the name and one as a conflicted copy, alike on both', async () => {
    const [a, b] = await devices(2);
    writeFileSync(a!.p('notes.txt'), 'base\n');
    await settle([a!, b!]);
    writeFileSync(a!.p('notes.txt'), 'edited on one\n');
    writeFileSync(b!.p('notes.txt'), 'edited on two\n');
    await settle([a!, b!]);
    const tree = converged([a!, b!]);
    const names = Object.keys(tree).sort();
    expect(names).toHaveLength(2);
    const copy = names.find((n) => CONFLICT.test(n))!;
    expect(copy).toBeDefined();
    const [, stem, device, ext] = CONFLICT.exec(copy)!;
    expect(`${stem}${ext}`).toBe('notes.txt');
    const contents = [readFileSync(a!.p('notes.txt'), 'utf8'), readFileSync(a!.p(copy), 'utf8')].sort();
    expect(contents).toEqual(['edited on one\n', 'edited on two\n']);
    // The copy says which device wrote what it holds.
    expect(readFileSync(a!.p(copy), 'utf8')).toBe(device === 'two' ? 'edited on two\n' : 'edited on one\n');
  });

  it('edit on one, delete on the other: the edited file survives', async () => {
    const [a, b] = await devices(2);
    writeFileSync(a!.p('keep.txt'), 'v1\n');
    writeFileSync(a!.p('other.txt'), 'x\n');
    await settle([a!, b!]);
    writeFileSync(a!.p('keep.txt'), 'v2 edited\n');
    unlinkSync(b!.p('keep.txt'));
    unlinkSync(b!.p('other.txt')); // a delete nobody contests goes through
    await settle([a!, b!]);
    const tree = converged([a!, b!]);
    expect(Object.keys(tree)).toEqual(['keep.txt']);
    expect(readFileSync(b!.p('keep.txt'), 'utf8')).toBe('v2 edited\n');
  });

  it('the same new name created on both: both files survive', async () => {
    const [a, b] = await devices(2);
    writeFileSync(a!.p('report.pdf'), 'from one');
    writeFileSync(b!.p('report.pdf'), 'from two');
    await settle([a!, b!]);
    const tree = converged([a!, b!]);
    const names = Object.keys(tree).sort();
    expect(names).toHaveLength(2);
    expect(names).toContain('report.pdf');
    const copy = names.find((n) => n !== 'report.pdf')!;
    expect(copy).toMatch(CONFLICT);
    expect([readFileSync(a!.p('report.pdf'), 'utf8'), readFileSync(a!.p(copy), 'utf8')].sort()).toEqual(['from one', 'from two']);
  });

  it('a folder deleted on one while the other adds files to it: the added files survive', async () => {
    const [a, b] = await devices(2);
    mkdirSync(a!.p('project', 'old'), { recursive: true });
    writeFileSync(a!.p('project', 'old', 'a.txt'), 'a');
    await settle([a!, b!]);
    rmSync(a!.p('project'), { recursive: true });
    writeFileSync(b!.p('project', 'old', 'new.txt'), 'added on two');
    writeFileSync(b!.p('project', 'top.txt'), 'also added');
    await settle([a!, b!]);
    const tree = converged([a!, b!]);
    expect(Object.keys(tree).sort()).toEqual(['project', 'project/old', 'project/old/new.txt', 'project/top.txt']);
    expect(readFileSync(a!.p('project', 'old', 'new.txt'), 'utf8')).toBe('added on two');
  });

  it('moves that together would make a cycle: no cycle, nothing lost or duplicated, alike on both', async () => {
    const [a, b] = await devices(2);
    mkdirSync(a!.p('x'));
    mkdirSync(a!.p('y'));
    writeFileSync(a!.p('x', 'in-x'), 'x');
    writeFileSync(a!.p('y', 'in-y'), 'y');
    await settle([a!, b!]);
    renameSync(a!.p('x'), a!.p('y', 'x'));
    renameSync(b!.p('y'), b!.p('x', 'y'));
    await settle([a!, b!]);
    const tree = converged([a!, b!]);
    const files = Object.keys(tree).filter((k) => (tree[k] as { kind: string }).kind === 'file');
    expect(files.map((f) => f.split('/').pop()).sort()).toEqual(['in-x', 'in-y']);
    // Every path resolves from the root, so there is no cycle; each folder appears once.
    const dirs = Object.keys(tree).filter((k) => (tree[k] as { kind: string }).kind === 'dir').map((d) => d.split('/').pop());
    expect(dirs.sort()).toEqual(['x', 'y']);
  });

  it('concurrent renames of one file: one wins, the same on both, nothing duplicated', async () => {
    const [a, b] = await devices(2);
    writeFileSync(a!.p('draft.txt'), 'text');
    await settle([a!, b!]);
    renameSync(a!.p('draft.txt'), a!.p('final-one.txt'));
    renameSync(b!.p('draft.txt'), b!.p('final-two.txt'));
    await settle([a!, b!]);
    const tree = converged([a!, b!]);
    expect(Object.keys(tree)).toHaveLength(1);
    expect(['final-one.txt', 'final-two.txt']).toContain(Object.keys(tree)[0]);
  });

  it('a rename on one and an edit on the other merge into the renamed, edited file', async () => {
    const [a, b] = await devices(2);
    writeFileSync(a!.p('doc.txt'), 'v1');
    await settle([a!, b!]);
    renameSync(a!.p('doc.txt'), a!.p('renamed.txt'));
    writeFileSync(b!.p('doc.txt'), 'v2 from two');
    await settle([a!, b!]);
    const tree = converged([a!, b!]);
    expect(Object.keys(tree)).toEqual(['renamed.txt']);
    expect(readFileSync(a!.p('renamed.txt'), 'utf8')).toBe('v2 from two');
  });
});

describe('three devices', () => {
  it('converge on byte-identical trees, and coffer devices lists them', async () => {
    const all = await devices(3);
    for (const [i, d] of all.entries()) {
      mkdirSync(d.p(`dir-${i}`));
      writeFileSync(d.p(`dir-${i}`, 'file'), `device ${i}\n`);
      writeFileSync(d.p('common.txt'), `common from ${i}\n`);
    }
    await settle(all);
    const tree = converged(all);
    expect(Object.keys(tree).filter((k) => k.startsWith('common')).length).toBe(3);
    const listing = JSON.parse((await cofferOk(['devices', all[0]!.ws.mnt, '--json'])).stdout) as {
      devices: { name: string; thisDevice: boolean; entries: number; lastPublishMs: number | null }[];
    };
    expect(listing.devices).toHaveLength(3);
    expect(listing.devices.filter((d) => !d.thisDevice).map((d) => d.name).sort()).toEqual(['three', 'two']);
    expect(listing.devices.filter((d) => !d.thisDevice).every((d) => d.entries > 0 && d.lastPublishMs !== null)).toBe(true);
    const text = (await cofferOk(['devices', all[1]!.ws.vault])).stdout;
    expect(text).toContain('two (this device)');
    expect(text).toContain('three');
  });
});
