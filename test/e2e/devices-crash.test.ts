/**
 * Devices killed (SIGKILL) in the middle of publishing and of merging, and remote garbage while
 * another device is away: no acknowledged write on any device is lost, and the devices converge.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cofferOk, Workspace } from '../helpers/drive.js';
// @ts-expect-error: a plain .mjs module shared with the fixture writer
import { describeTree } from '../../scripts/lib/golden-tree.mjs';

const workspaces: Workspace[] = [];
afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

async function pair(): Promise<{ a: Workspace; b: Workspace; url: string; remote: string }> {
  const a = new Workspace('coffer-crash-a-');
  const b = new Workspace('coffer-crash-b-');
  workspaces.push(a, b);
  const remote = join(a.dir, 'remote');
  const url = `file://${remote}`;
  await a.init(['--remote', url]);
  await cofferOk(['clone', url, b.vault, '--device-name', 'bee']);
  for (const ws of [a, b]) ws.editConfig({ pollIntervalMs: 300 });
  return { a, b, url, remote };
}

async function kill(ws: Workspace): Promise<void> {
  const pid = await ws.daemonPid();
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
}

async function settle(...all: Workspace[]): Promise<void> {
  for (let round = 0; round < 2; round++) for (const ws of all) await cofferOk(['sync', ws.mnt, '--wait', '--timeout', '90']);
}

function writeMany(ws: Workspace, dir: string, n: number): Map<string, string> {
  const files = new Map<string, string>();
  mkdirSync(ws.path(dir), { recursive: true });
  for (let i = 0; i < n; i++) {
    const name = `${dir}/f-${i}.txt`;
    const body = `${name} ${randomBytes(8).toString('hex')}\n`;
    writeFileSync(ws.path(name), body);
    files.set(name, body);
  }
  return files;
}

describe('a device killed with SIGKILL', () => {
  it('during a publish (the entry delayed, then stored with its answer lost): nothing written is lost', async () => {
    const { a, b } = await pair();
    const gate = join(a.dir, 'gate');
    // Entry creates are slow, then stored with their answer lost while the gate file exists.
    await a.mount(a.mnt, { COFFER_FAULTS: `latency=1500,reset=1:after,ops=createExclusive,during-file=${gate}` });
    writeFileSync(gate, '');
    const files = writeMany(a, 'batch', 200);
    await cofferOk(['sync', a.mnt]); // asks for a publish, does not wait
    await new Promise((r) => setTimeout(r, 2500));
    await kill(a);
    rmSync(gate);
    await a.mount();
    await b.mount();
    await settle(a, b);
    for (const [name, body] of files) expect(readFileSync(b.path(name), 'utf8'), name).toBe(body);
    expect(describeTree(b.mnt)).toEqual(describeTree(a.mnt));
  });

  it('during merges of another device’s changes, again and again: it catches up and converges', async () => {
    const { a, b } = await pair();
    await a.mount();
    await b.mount();
    const files = writeMany(a, 'many', 3000);
    await cofferOk(['sync', a.mnt, '--wait', '--timeout', '120']);
    for (const delayMs of [200, 600, 1200]) {
      await new Promise((r) => setTimeout(r, delayMs));
      await kill(b);
      await b.mount();
    }
    await settle(a, b);
    // Every file's first read fetches its chunk from the remote: about a minute for 3,000.
    for (const [name, body] of files) expect(readFileSync(b.path(name), 'utf8'), name).toBe(body);
    expect(describeTree(b.mnt)).toEqual(describeTree(a.mnt));
  }, 300_000);
});

describe('remote garbage with several devices', () => {
  it('never deletes a chunk another device may still name, even one it wrote offline and has not published', async () => {
    const { a, b, remote } = await pair();
    const count = () => readdirSync(join(remote, 'chunks'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length;
    const body = randomBytes(1024 * 1024 + 100);
    await a.mount();
    writeFileSync(a.path('f.bin'), body);
    await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);
    const before = count();
    // B, away from the remote, writes the same bytes (the same chunks) and does not publish.
    b.editConfig({ remote: `file://${join(b.dir, 'nowhere')}`, shutdownDrainMs: 0 });
    writeFileSync(join(b.dir, 'nowhere'), 'not a folder');
    await b.mount();
    writeFileSync(b.path('g.bin'), body);
    await b.unmount();
    // A deletes its copy and syncs for longer than the grace period before chunks are forgotten.
    rmSync(a.path('f.bin'));
    for (let i = 0; i < 12; i++) {
      await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(count()).toBe(before);
    // B comes back: what it wrote offline reaches A whole.
    rmSync(join(b.dir, 'nowhere'));
    b.editConfig({ remote: `file://${remote}` });
    await b.mount();
    await settle(b, a);
    expect(readFileSync(a.path('g.bin')).equals(body)).toBe(true);
    expect(existsSync(a.path('f.bin'))).toBe(false);
  });
});
