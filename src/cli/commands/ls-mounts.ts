import { daemonInfoForMountpoint, isDaemonAlive } from '../../daemon/registry.js';
import { isStaleMount, readMounts } from '../../fs/mountinfo.js';

export interface MountListing {
  mountpoint: string;
  /** The volume name, as the kernel shows it (the mount's source). */
  name: string;
  vault: string | null;
  pid: number | null;
  /** live: served by a running daemon; stale: its daemon died (coffer unmount cleans it); foreign: another user's. */
  state: 'live' | 'stale' | 'foreign';
}

export async function listMounts(): Promise<MountListing[]> {
  const listings: MountListing[] = [];
  for (const entry of await readMounts()) {
    if (entry.fstype !== 'fuse.coffer') continue;
    const record = await daemonInfoForMountpoint(entry.mountpoint);
    const alive = record ? await isDaemonAlive(record.pid) : false;
    const state = alive ? 'live' : (await isStaleMount(entry.mountpoint)) ? 'stale' : 'foreign';
    listings.push({ mountpoint: entry.mountpoint, name: entry.source, vault: alive ? record!.vault : null, pid: alive ? record!.pid : null, state });
  }
  return listings;
}

export async function lsMountsCommand(args: { json: boolean }): Promise<void> {
  const listings = await listMounts();
  if (args.json) {
    process.stdout.write(JSON.stringify(listings) + '\n');
    return;
  }
  if (listings.length === 0) {
    process.stdout.write('No Coffer mounts.\n');
    return;
  }
  const rows = [
    ['NAME', 'MOUNTPOINT', 'STATE', 'PID', 'VAULT'],
    ...listings.map((l) => [l.name, l.mountpoint, l.state, l.pid?.toString() ?? '-', l.vault ?? '-']),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  process.stdout.write(rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
  if (listings.some((l) => l.state === 'stale')) process.stdout.write('Clean a stale mount with: coffer unmount <mountpoint>\n');
}
