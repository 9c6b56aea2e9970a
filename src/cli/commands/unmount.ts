import { CofferError } from '../../errors.js';
import { callDaemon } from '../../daemon/control.js';
import type { UnmountResult } from '../../daemon/daemon.js';
import { isDaemonAlive, removeDaemonInfo, removeMountRecord } from '../../daemon/registry.js';
import { findMount, forceUnmount, isStaleMount } from '../../fs/mountinfo.js';
import { formatBytes } from '../format.js';
import { say, waitFor } from '../shared.js';
import { resolveTarget } from '../target.js';
import { waitForSync } from './sync.js';

export async function unmountCommand(args: { target: string; waitSync: boolean }): Promise<void> {
  const target = await resolveTarget(args.target);
  if (target.alive && target.info) {
    const { info } = target;
    if (args.waitSync) await waitForSync(info.socket);
    const result = (await callDaemon(info.socket, { op: 'unmount' })) as UnmountResult;
    await waitFor(async () => !(await isDaemonAlive(info.pid)), 60_000, 'the daemon stopping');
    if (await findMount(info.mountpoint)) await forceUnmount(info.mountpoint);
    say(`Unmounted ${info.mountpoint}.`);
    if (result.pendingChunks > 0) {
      say(
        `${result.pendingChunks} chunks (${formatBytes(result.pendingBytes)}) are not on the remote yet; they are safe in the local cache ` +
          `and upload at the next mount (coffer unmount --wait-sync waits for them).`,
      );
    }
    return;
  }
  // No live daemon: clean up after one that died, if it left a mount behind.
  const mountpoint = target.mountpoint ?? target.info?.mountpoint;
  const entry = mountpoint ? await findMount(mountpoint) : undefined;
  if (target.info) await removeDaemonInfo(target.info).catch(() => {});
  if (mountpoint) await removeMountRecord(mountpoint).catch(() => {});
  if (mountpoint && entry) {
    if (!entry.fstype.startsWith('fuse')) {
      throw new CofferError('NOT_MOUNTED', `${mountpoint} is a ${entry.fstype} mount, not a Coffer drive; not touching it`);
    }
    if (!(await isStaleMount(mountpoint))) {
      // A live mount this user has no record of: another user's daemon serves it.
      const owner = /(?:^|,)user_id=(\d+)/.exec(entry.options)?.[1];
      throw new CofferError(
        'NOT_MOUNTED',
        `${mountpoint} is served by a running daemon that is not yours${owner !== undefined ? ` (user id ${owner})` : ''}; run coffer unmount as that user`,
      );
    }
    await forceUnmount(mountpoint);
    say(`Cleaned up the stale mount at ${mountpoint} (its daemon was no longer running).`);
    return;
  }
  throw new CofferError('NOT_MOUNTED', `nothing is mounted at ${args.target}`);
}
