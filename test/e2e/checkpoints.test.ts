/**
 * Checkpoints: mounted devices write one in the background once the journals have grown past it;
 * a clone reads the newest checkpoint and then only the entries after it (proved by deleting the
 * entries it covers first), shows the same tree, and joins as a device that sees and is seen. A
 * checkpoint part tampered with is detected, named, and the clone reads every journal instead.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { coffer, cofferOk, Workspace, waitFor } from '../helpers/drive.js';
// @ts-expect-error: a plain .mjs module shared with the fixture writer
import { describeTree } from '../../scripts/lib/golden-tree.mjs';

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

function workspace(): Workspace {
  const ws = new Workspace('coffer-ckpt-');
  workspaces.push(ws);
  return ws;
}

/** Journal entry files on the remote, per device. */
function journals(remote: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const dir = join(remote, 'journals');
  for (const device of existsSync(dir) ? readdirSync(dir) : []) out.set(device, readdirSync(join(dir, device)).sort());
  return out;
}

/** Checkpoint heads on the remote, as `device/number`. */
function checkpointHeads(remote: string): string[] {
  const dir = join(remote, 'checkpoints');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((device) => readdirSync(join(dir, device)).filter((k) => /^\d{20}$/.test(k)).map((k) => `${device}/${k}`));
}

describe('checkpoints', () => {
  it('are written in the background; a clone reads the newest and only the entries after it, and a tampered one is passed over', async () => {
    const a = workspace();
    const b = workspace();
    const remote = join(a.dir, 'remote');
    const url = `file://${remote}`;
    await a.init(['--remote', url]);
    a.editConfig({ pollIntervalMs: 300, checkpointEntries: 6 });
    await cofferOk(['clone', url, b.vault, '--device-name', 'two']);
    b.editConfig({ pollIntervalMs: 300, checkpointEntries: 6 });
    await a.mount();
    await b.mount();

    // Eight entries or so: folders, files, a rename, an edit and a delete, on both devices.
    mkdirSync(a.path('docs'));
    for (let i = 0; i < 4; i++) {
      writeFileSync(a.path('docs', `a${i}.txt`), `from one ${i}\n`.repeat(100 + i));
      await cofferOk(['sync', a.vault, '--wait', '--timeout', '60']);
    }
    await waitFor('two to see the folder', () => existsSync(b.path('docs', 'a3.txt')));
    writeFileSync(b.path('docs', 'b.txt'), 'from two\n');
    await cofferOk(['sync', b.vault, '--wait', '--timeout', '60']);
    writeFileSync(b.path('docs', 'a0.txt'), 'edited on two\n');
    await cofferOk(['sync', b.vault, '--wait', '--timeout', '60']);
    await waitFor('one to see the edit', () => readFileSync(a.path('docs', 'a0.txt'), 'utf8') === 'edited on two\n');
    writeFileSync(a.path('docs', 'a1.txt'), 'x', { flag: 'a' });
    await cofferOk(['sync', a.vault, '--wait', '--timeout', '60']);
    await cofferOk(['sync', b.vault, '--wait', '--timeout', '60']);

    // Quiet: the checkpoint that comes covers every entry there is now.
    await waitFor('a checkpoint on the remote', () => checkpointHeads(remote).length > 0, 60_000);
    const covered = journals(remote);
    const [head] = checkpointHeads(remote);
    const parts = readdirSync(join(remote, 'checkpoints', head!.split('/')[0]!)).filter((k) => k.startsWith(`${head!.split('/')[1]}.`));
    expect(parts.length).toBeGreaterThan(0);

    // More changes after it.
    writeFileSync(a.path('after.txt'), 'written after the checkpoint\n');
    await cofferOk(['sync', a.vault, '--wait', '--timeout', '60']);
    await waitFor('two to see the later file', () => existsSync(b.path('after.txt')));
    await cofferOk(['sync', b.vault, '--wait', '--timeout', '60']);
    const tree = describeTree(a.mnt) as Record<string, unknown>;
    expect(describeTree(b.mnt)).toEqual(tree);

    // A part swapped for another one: detected, named, and the clone reads the journals instead.
    const partPath = join(remote, 'checkpoints', head!.split('/')[0]!, parts[0]!);
    const original = readFileSync(partPath);
    const flipped = Buffer.from(original);
    flipped[flipped.length - 1] ^= 1;
    writeFileSync(partPath, flipped);
    const d = workspace();
    const tampered = await coffer(['clone', url, d.vault, '--device-name', 'four', '--json']);
    expect(tampered.code).toBe(0);
    expect(tampered.stderr).toMatch(/checkpoint \d+ of device [0-9a-f]{32} cannot be used \(part 0 of checkpoint/);
    const fromJournals = JSON.parse(tampered.stdout) as { checkpoint: unknown; entries: number };
    expect(fromJournals.checkpoint).toBeNull();
    writeFileSync(partPath, original);

    // The entries the checkpoint covers are removed (all but each journal's last, which a
    // rollback check asks for): a clone does not need them.
    for (const [device, entries] of covered) for (const entry of entries.slice(0, -1)) rmSync(join(remote, 'journals', device, entry));
    const c = workspace();
    const cloned = await cofferOk(['clone', url, c.vault, '--device-name', 'three', '--json']);
    const result = JSON.parse(cloned.stdout) as { checkpoint: { seq: number; entries: number } | null; entries: number };
    expect(result.checkpoint).not.toBeNull();
    expect(result.entries).toBeGreaterThanOrEqual(1); // after.txt's entry at least
    expect(result.entries).toBeLessThan(4);
    c.editConfig({ pollIntervalMs: 300 });
    await c.mount();
    expect(describeTree(c.mnt)).toEqual(tree);

    // The new device writes; the others see it, and it sees theirs.
    writeFileSync(c.path('docs', 'from-three.txt'), 'three\n');
    await cofferOk(['sync', c.vault, '--wait', '--timeout', '60']);
    await waitFor('one to see the file of the cloned device', () => existsSync(a.path('docs', 'from-three.txt')));
    writeFileSync(a.path('docs', 'late.txt'), 'late\n');
    await cofferOk(['sync', a.vault, '--wait', '--timeout', '60']);
    await waitFor('the cloned device to see a later file', () => existsSync(c.path('docs', 'late.txt')));
    for (const ws of [a, b, c]) await cofferOk(['sync', ws.vault, '--wait', '--timeout', '60']);
    await cofferOk(['sync', b.vault, '--wait', '--timeout', '60']);
    await waitFor('two to see the late file', () => existsSync(b.path('docs', 'late.txt')) && existsSync(b.path('docs', 'from-three.txt')));
    const final = describeTree(a.mnt);
    expect(describeTree(b.mnt)).toEqual(final);
    expect(describeTree(c.mnt)).toEqual(final);
    expect(statSync(c.path('docs', 'a0.txt')).size).toBe('edited on two\n'.length);
  });

  it('a device keeps its two newest checkpoints on the remote and deletes the rest, parts of failed attempts included', async () => {
    const a = workspace();
    const remote = join(a.dir, 'remote');
    await a.init(['--remote', `file://${remote}`]);
    a.editConfig({ pollIntervalMs: 200, checkpointEntries: 2 });
    await a.mount();
    writeFileSync(a.path('first.txt'), 'first\n');
    await cofferOk(['sync', a.vault, '--wait', '--timeout', '60']);
    writeFileSync(a.path('second.txt'), 'second\n');
    await cofferOk(['sync', a.vault, '--wait', '--timeout', '60']);
    await waitFor('a first checkpoint', () => checkpointHeads(remote).length > 0, 60_000);
    const device = checkpointHeads(remote)[0]!.split('/')[0]!;
    const dir = join(remote, 'checkpoints', device);
    // The part an attempt left behind when it died before its head.
    writeFileSync(join(dir, `${'0'.repeat(19)}1.000007`), 'left by an attempt that died');
    const seqs = () => checkpointHeads(remote).map((h) => Number(h.split('/')[1]));
    for (let i = 0; Math.max(0, ...seqs()) < 4; i++) {
      if (i > 60) throw new Error(`checkpoints written: ${seqs().join(', ')}`);
      writeFileSync(a.path(`more-${i}.txt`), `more ${i}\n`);
      await cofferOk(['sync', a.vault, '--wait', '--timeout', '60']);
      await new Promise((r) => setTimeout(r, 500));
    }
    const newest = Math.max(...seqs());
    await waitFor('older checkpoints pruned', () => seqs().length === 2, 30_000);
    expect(Math.max(...seqs())).toBeGreaterThanOrEqual(newest);
    const kept = new Set(seqs());
    for (const key of readdirSync(dir)) expect(kept.has(Number(key.slice(0, 20))), key).toBe(true);

    // A clone from what is left shows the same tree.
    const c = workspace();
    const cloned = JSON.parse((await cofferOk(['clone', `file://${remote}`, c.vault, '--device-name', 'late', '--json'])).stdout) as { checkpoint: { seq: number } | null };
    expect(cloned.checkpoint).not.toBeNull();
    await c.mount();
    expect(describeTree(c.mnt)).toEqual(describeTree(a.mnt));

    // An index rebuilt from the remote starts from the newest checkpoint too, and lacks nothing.
    const tree = describeTree(a.mnt);
    await a.unmount();
    const rebuilt = JSON.parse((await cofferOk(['rebuild-index', a.vault, '--json'])).stdout) as { checkpoint: { seq: number } | null; entries: number };
    expect(rebuilt.checkpoint?.seq).toBeGreaterThanOrEqual(newest);
    await a.mount();
    expect(describeTree(a.mnt)).toEqual(tree);
  });
});
