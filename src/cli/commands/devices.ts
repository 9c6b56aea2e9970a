/**
 * `coffer devices`: the vault's devices as this device knows them: each one's name and id, when it
 * last published, and how far into its journal this device has applied (docs/FORMAT.md, "Journals").
 * Read from the running daemon when the vault is mounted, else from the device state on disk.
 */
import { CofferError } from '../../errors.js';
import { VaultIndex } from '../../index/vault-index.js';
import { readDeviceState } from '../../sync/device-state.js';
import { vaultPaths } from '../../vault/layout.js';
import { formatAgo } from '../format.js';
import { liveStatus, printJson } from '../shared.js';
import { requireVault, resolveTarget } from '../target.js';

export interface DeviceListing {
  device: string;
  name: string;
  thisDevice: boolean;
  /** When it last published (epoch ms; this device: its last publish; others: the newest entry applied here). */
  lastPublishMs: number | null;
  /** Entries of its journal: published (this device) or applied here (others). */
  entries: number;
  /** When this device last found a new entry of it (null: never, or this device). */
  heardMs: number | null;
}

export async function listDevices(path: string): Promise<DeviceListing[]> {
  const target = await resolveTarget(path);
  if (target.alive && target.info) {
    const status = await liveStatus(target, path);
    const sync = status.sync;
    return [
      { device: sync.device.device, name: sync.device.name, thisDevice: true, lastPublishMs: sync.lastPublishMs, entries: sync.publishedSeq, heardMs: null },
      ...sync.devices.map((d) => ({ device: d.device, name: d.name, thisDevice: false, lastPublishMs: d.publishedMs, entries: d.seq, heardMs: d.heardMs })),
    ];
  }
  const paths = vaultPaths(requireVault(target, path));
  const state = await readDeviceState(paths.state);
  if (!state || 'format1' in state) throw new CofferError('UNSUPPORTED_FORMAT', `${paths.dir} is a format-1 vault, which has no devices yet: mount it once to upgrade it`);
  const index = new VaultIndex(paths.index, { readonly: true });
  try {
    return [
      { device: state.device, name: state.name, thisDevice: true, lastPublishMs: state.lastPublishMs, entries: state.seq, heardMs: null },
      ...Object.entries(state.seen).map(([device, seen]) => ({
        device,
        name: index.replica.deviceName(device),
        thisDevice: false,
        lastPublishMs: seen.publishedMs,
        entries: seen.seq,
        heardMs: seen.heardMs,
      })),
    ];
  } finally {
    index.close();
  }
}

export async function devicesCommand(args: { target: string; json: boolean }): Promise<void> {
  const devices = await listDevices(args.target);
  if (args.json) {
    printJson({ devices });
    return;
  }
  const rows = [
    ['NAME', 'ID', 'LAST PUBLISH', 'ENTRIES', 'HEARD FROM'],
    ...devices.map((d) => [
      d.thisDevice ? `${d.name} (this device)` : d.name,
      d.device,
      formatAgo(d.lastPublishMs),
      d.thisDevice ? `${d.entries} published` : `${d.entries} applied here`,
      d.thisDevice ? '-' : formatAgo(d.heardMs),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  process.stdout.write(rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
}
