/**
 * A full disk under the vault (a small tmpfs): writes fail with ENOSPC instead of
 * losing data silently, the index stays consistent, and the drive works again once
 * space returns. Needs root (it mounts a tmpfs).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { coffer, cofferOk, isMounted } from './helpers/drive.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function writeAll(path: string, data: Buffer): string | undefined {
  try {
    const fd = fs.openSync(path, 'w');
    try {
      fs.writeSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

/** A vault on a 40 MiB tmpfs, unmounted and removed after the test. */
function smallDisk(): { dir: string; mnt: string; vault: string; small: string } {
  const dir = fs.mkdtempSync('/tmp/coffer-full-');
  const small = join(dir, 'small');
  const mnt = join(dir, 'mnt');
  fs.mkdirSync(small);
  fs.mkdirSync(mnt);
  expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', small]).status).toBe(0);
  cleanups.push(async () => {
    if (isMounted(mnt)) {
      if ((await coffer(['unmount', mnt])).code !== 0) spawnSync('umount', ['-l', mnt]);
    }
    spawnSync('umount', ['-l', small]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, mnt, vault: join(small, 'vault'), small };
}

describe('a full disk under the vault', () => {
  it('fails writes with ENOSPC, keeps the index consistent, and recovers when space returns', async () => {
    const { dir, mnt, vault, small } = smallDisk();
    const remote = join(dir, 'remote');
    await cofferOk(['init', vault, '--remote', `file://${remote}`]);
    // The remote is unreachable, so nothing can be evicted to make room: the disk really fills.
    fs.renameSync(remote, `${remote}.away`);
    fs.writeFileSync(remote, 'down');
    fs.writeFileSync(join(small, 'filler'), Buffer.alloc(16 * 1024 * 1024));
    await cofferOk(['mount', vault, mnt]);

    const kept = new Map<string, Buffer>();
    let failure: string | undefined;
    for (let i = 0; i < 12 && !failure; i++) {
      const data = randomBytes(3 * 1024 * 1024);
      failure = writeAll(join(mnt, `f${i}`), data);
      if (!failure) kept.set(`f${i}`, data);
    }
    expect(failure).toBe('ENOSPC');
    expect(kept.size).toBeGreaterThan(0);
    // The daemon is alive and answers; what was acknowledged reads back.
    const status = JSON.parse((await cofferOk(['status', mnt, '--json'])).stdout);
    expect(status.mounted).toBe(true);
    for (const [name, data] of kept) expect(fs.readFileSync(join(mnt, name)).equals(data)).toBe(true);

    // Space returns: writing works again.
    fs.rmSync(join(small, 'filler'));
    const after = randomBytes(3 * 1024 * 1024);
    expect(writeAll(join(mnt, 'after'), after)).toBeUndefined();
    expect(fs.readFileSync(join(mnt, 'after')).equals(after)).toBe(true);

    fs.rmSync(remote);
    fs.renameSync(`${remote}.away`, remote);
    await cofferOk(['sync', mnt, '--wait']);
    await cofferOk(['unmount', mnt]);
    const fsck = await coffer(['fsck', vault, '--remote']);
    expect(fsck.code, fsck.stderr).toBe(0);
    await cofferOk(['mount', vault, mnt]);
    for (const [name, data] of kept) expect(fs.readFileSync(join(mnt, name)).equals(data)).toBe(true);
    expect(fs.readFileSync(join(mnt, 'after')).equals(after)).toBe(true);
  });

  it('makes room by evicting cached chunks the remote already holds', async () => {
    const { dir, mnt, vault } = smallDisk();
    await cofferOk(['init', vault, '--remote', `file://${join(dir, 'remote')}`]);
    await cofferOk(['mount', vault, mnt]);
    // Three times the disk, in rounds that are each uploaded before the next: the cache keeps room.
    const written: Buffer[] = [];
    for (let i = 0; i < 12; i++) {
      const data = randomBytes(10 * 1024 * 1024);
      expect(writeAll(join(mnt, `big${i}`), data)).toBeUndefined();
      written.push(data);
      await cofferOk(['sync', mnt, '--wait']);
    }
    for (let i = 0; i < written.length; i++) {
      expect((await fs.promises.readFile(join(mnt, `big${i}`))).equals(written[i]!)).toBe(true);
    }
  });
});
