/**
 * What this device remembers of the vault's journals, outside the index (so that nothing restored
 * from the remote can lower it): its own id, name, Lamport clock and the last entry it published,
 * and for every other device the last entry it applied (the high-water mark a rollback is measured
 * against). Kept in `state/sync-state.json` (docs/FORMAT.md, "Device state").
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CofferError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-write.js';

export interface SeenDevice {
  /** The last entry applied (0: none) and its sealed hash. */
  seq: number;
  hash: string | null;
  /** When that entry was created (its `created`, epoch ms), and when this device last found a new one. */
  publishedMs: number | null;
  heardMs: number | null;
}

export interface DeviceState {
  version: 2;
  device: string;
  name: string;
  /** The Lamport clock: above every stamp this device has made or seen. */
  clock: number;
  /** This device's last published entry (0: none) and its sealed hash. */
  seq: number;
  hash: string | null;
  lastPublishMs: number | null;
  seen: Record<string, SeenDevice>;
  /** Set while a format-1 vault is being upgraded (docs/FORMAT.md, "Upgrading from format 1"). */
  upgrading?: boolean;
  /** The device record is on the remote. */
  registered?: boolean;
  /** This device's last checkpoint number (attempts included), and the journal entries (summed over devices) the newest checkpoint it knows covers. */
  checkpoint?: { seq: number; covered: number; attemptMs: number };
  /** The entry being created, every attempt at it (saved before each create): found on the remote under its number, it is this device's own. */
  creating?: { seq: number; hashes: string[] };
}

export function deviceStatePath(stateDir: string): string {
  return join(stateDir, 'sync-state.json');
}

export function newDeviceState(name: string): DeviceState {
  return { version: 2, device: randomBytes(16).toString('hex'), name, clock: 0, seq: 0, hash: null, lastPublishMs: null, seen: {} };
}

/** The state file as it is; undefined if there is none; `format1` when it is a format-1 vault's. */
export async function readDeviceState(stateDir: string): Promise<DeviceState | { format1: { lastManifest: number } } | undefined> {
  let text: string;
  try {
    text = await readFile(deviceStatePath(stateDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new CofferError('CORRUPT_FORMAT', `${deviceStatePath(stateDir)} is not JSON`);
  }
  if (raw.version === undefined) return { format1: { lastManifest: typeof raw.lastManifest === 'number' ? raw.lastManifest : 0 } };
  if (raw.version !== 2 || typeof raw.device !== 'string' || !/^[0-9a-f]{32}$/.test(raw.device) || typeof raw.clock !== 'number' || typeof raw.seq !== 'number') {
    throw new CofferError('CORRUPT_FORMAT', `${deviceStatePath(stateDir)} is malformed`);
  }
  return raw as unknown as DeviceState;
}

export async function writeDeviceState(stateDir: string, state: DeviceState): Promise<void> {
  await mkdir(stateDir, { recursive: true });
  await writeFileAtomic(deviceStatePath(stateDir), JSON.stringify(state, null, 2) + '\n');
}
