/**
 * A remote that lies about one device's journal to another device: entries withheld, replayed,
 * reordered, swapped in from another device, or rolled back after they were applied. Device B must
 * notice, name device A, never apply what it cannot trust, and say so (sync --wait exits 1; a
 * rollback refuses the mount).
 */
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coffer, cofferOk, isMounted, Workspace } from '../helpers/drive.js';

let a: Workspace;
let b: Workspace;
let c: Workspace;
let remote: string;
let pristineRemote: string;
let pristineB: string;
let deviceA: string;
let deviceC: string;

beforeAll(async () => {
  a = new Workspace('coffer-lying-a-');
  b = new Workspace('coffer-lying-b-');
  c = new Workspace('coffer-lying-c-');
  remote = join(a.dir, 'remote');
  const url = `file://${remote}`;
  await a.init(['--remote', url]);
  await a.mount();
  writeFileSync(a.path('one'), 'entry one');
  await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);
  // B has applied entry 1 of A's journal, then goes away.
  await cofferOk(['clone', url, b.vault, '--device-name', 'bee']);
  await cofferOk(['clone', url, c.vault, '--device-name', 'sea']);
  for (const name of ['two', 'three']) {
    writeFileSync(a.path(name), `entry ${name}`);
    await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);
  }
  await a.unmount();
  // C publishes an entry of its own, to be swapped into A's journal.
  await c.mount();
  writeFileSync(c.path('from-c'), 'c');
  await cofferOk(['sync', c.mnt, '--wait', '--timeout', '60']);
  await c.unmount();
  deviceA = JSON.parse(readFileSync(join(a.vault, 'state', 'sync-state.json'), 'utf8')).device;
  deviceC = JSON.parse(readFileSync(join(c.vault, 'state', 'sync-state.json'), 'utf8')).device;
  expect(readdirSync(join(remote, 'journals', deviceA))).toHaveLength(3);
  pristineRemote = join(a.dir, 'pristine-remote');
  cpSync(remote, pristineRemote, { recursive: true });
  pristineB = join(b.dir, 'pristine-b');
  cpSync(b.vault, pristineB, { recursive: true });
}, 300_000);

afterAll(async () => {
  for (const ws of [a, b, c]) await ws?.cleanup();
}, 120_000);

function reset(): void {
  rmSync(remote, { recursive: true, force: true });
  cpSync(pristineRemote, remote, { recursive: true });
  rmSync(b.vault, { recursive: true, force: true });
  cpSync(pristineB, b.vault, { recursive: true });
}

const entryPath = (device: string, seq: number) => join(remote, 'journals', device, String(seq).padStart(20, '0'));

describe('a remote lying about another device’s journal', () => {
  const cases: [string, RegExp, () => void][] = [
    ['withholds an entry', /entry 2 of its journal is missing/, () => rmSync(entryPath(deviceA, 2))],
    ['replays an entry under a later number', /entry 2 of its journal is refused: .*failed authentication/, () => writeFileSync(entryPath(deviceA, 2), readFileSync(entryPath(deviceA, 1)))],
    [
      'reorders two entries',
      /entry 2 of its journal is refused: .*failed authentication/,
      () => {
        renameSync(entryPath(deviceA, 2), entryPath(deviceA, 9));
        renameSync(entryPath(deviceA, 3), entryPath(deviceA, 2));
        renameSync(entryPath(deviceA, 9), entryPath(deviceA, 3));
      },
    ],
    [
      'swaps in another device’s entry',
      /entry 2 of its journal is refused: .*failed authentication/,
      () => writeFileSync(entryPath(deviceA, 2), readFileSync(entryPath(deviceC, 1))),
    ],
  ];
  for (const [what, reason, tamper] of cases) {
    it(`${what}: detected, named, never applied, and sync --wait exits 1`, async () => {
      reset();
      tamper();
      await b.mount();
      try {
        const waited = await coffer(['sync', b.mnt, '--wait', '--timeout', '60']);
        expect(waited.code, waited.stderr).toBe(1);
        expect(waited.stderr).toMatch(/Not synced: the changes of device "[^"]+" \([0-9a-f]{8}\) cannot be applied/);
        expect(waited.stderr).toMatch(reason);
        // Nothing past the gap or the bad entry was applied: B shows A's first entry only (and C's).
        expect(existsSync(b.path('one'))).toBe(true);
        expect(existsSync(b.path('three'))).toBe(false);
        const status = (await cofferOk(['status', b.mnt])).stdout;
        expect(status).toMatch(/its changes cannot be applied/);
      } finally {
        await b.unmount();
      }
    });
  }

  it('rolls back entries this device already applied: the mount is refused, naming the device', async () => {
    reset();
    await b.mount();
    await cofferOk(['sync', b.mnt, '--wait', '--timeout', '60']);
    expect(readFileSync(b.path('three'), 'utf8')).toBe('entry three');
    await b.unmount();
    const saved = readFileSync(entryPath(deviceA, 3));
    rmSync(entryPath(deviceA, 3));
    const refused = await coffer(['mount', b.vault, b.mnt]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/entries up to 2 of device "[^"]+" \([0-9a-f]{8}\)'s journal.*rolled back or is withholding/);
    expect(isMounted(b.mnt)).toBe(false);
    // An older entry filed under the number already applied does not pass either.
    writeFileSync(entryPath(deviceA, 3), readFileSync(entryPath(deviceA, 2)));
    expect((await coffer(['mount', b.vault, b.mnt])).code).toBe(1);
    writeFileSync(entryPath(deviceA, 3), saved);
    await b.mount();
    expect(readFileSync(b.path('three'), 'utf8')).toBe('entry three');
    await b.unmount();
  });
});
