/**
 * What the publisher and the merger share: the index, the remote, the metadata key, and this
 * device's state (device-state.ts), which only they change and which is saved after every entry.
 */
import { CofferError } from '../errors.js';
import { ObjectType, openObject, sealObject, type ObjectContext } from '../crypto/objects.js';
import { decodeDeviceRecord, decodeJournalEntry, deviceObjectId, encodeDeviceRecord, journalObjectId, sealedHash, type DeviceRecord, type JournalEntry } from '../format/journal.js';
import type { VaultIndex } from '../index/vault-index.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import type { Log } from '../logging.js';
import { writeDeviceState, type DeviceState } from './device-state.js';

export class JournalContext {
  constructor(
    readonly index: VaultIndex,
    readonly backend: RemoteBackend,
    readonly metadataContext: ObjectContext,
    readonly stateDir: string,
    readonly log: Log,
    public state: DeviceState,
  ) {
    index.replica.localDeviceName = state.name;
    index.replica.setDeviceName(state.device, state.name);
  }

  async save(): Promise<void> {
    await writeDeviceState(this.stateDir, this.state);
  }

  /**
   * Entry numbers of a device's journal found on the remote, ascending, from `from` on: a poll
   * lists only what is new since the entry it applied last, not the whole history.
   */
  async listJournal(device: string, signal?: AbortSignal, from = 1): Promise<number[]> {
    const prefix = remoteKeys.journalPrefix(device);
    const after = from > 1 ? remoteKeys.journal(device, from - 1) : undefined;
    return (await this.backend.list(prefix, { signal, after }))
      .map((o) => o.key.slice(prefix.length))
      .filter((k) => /^\d{20}$/.test(k))
      .map(Number)
      .filter((seq) => seq >= from)
      .sort((a, b) => a - b);
  }

  /** Fetches, authenticates and parses entry `seq` of `device`; `sealed` is what its successor's `previous` hashes. */
  async readEntry(device: string, seq: number, signal?: AbortSignal): Promise<{ entry: JournalEntry; hash: string }> {
    const sealed = await this.backend.get(remoteKeys.journal(device, seq), { signal });
    const entry = decodeJournalEntry(openObject(this.metadataContext, ObjectType.JournalEntry, journalObjectId(device, seq), sealed), device, seq);
    return { entry, hash: sealedHash(sealed) };
  }

  sealEntry(entry: JournalEntry, plaintext: Buffer): Buffer {
    return sealObject(this.metadataContext, ObjectType.JournalEntry, journalObjectId(entry.device, entry.seq), plaintext, { pad: true });
  }

  /** The ids of the devices registered on the remote. */
  async listDevices(signal?: AbortSignal): Promise<string[]> {
    return (await this.backend.list(remoteKeys.devicePrefix, { signal }))
      .map((o) => o.key.slice(remoteKeys.devicePrefix.length))
      .filter((k) => /^[0-9a-f]{32}$/.test(k));
  }

  async readDevice(device: string, signal?: AbortSignal): Promise<DeviceRecord> {
    const sealed = await this.backend.get(remoteKeys.device(device), { signal });
    return decodeDeviceRecord(openObject(this.metadataContext, ObjectType.DeviceRecord, deviceObjectId(device), sealed), device);
  }
}

/**
 * Registers a device on the remote (exclusive create). Its own record already there (an earlier
 * attempt whose answer was lost) is fine; another one under its id is refused.
 */
export async function registerDevice(backend: RemoteBackend, metadataContext: ObjectContext, device: string, name: string, signal?: AbortSignal): Promise<void> {
  const record: DeviceRecord = { format: 'coffer-device', version: 2, device, name, created: new Date().toISOString() };
  const sealed = sealObject(metadataContext, ObjectType.DeviceRecord, deviceObjectId(device), encodeDeviceRecord(record), { pad: true });
  try {
    await backend.createExclusive(remoteKeys.device(device), sealed, { signal });
  } catch (err) {
    if ((err as CofferError).code !== 'REMOTE_EXISTS') throw err;
    const existing = decodeDeviceRecord(openObject(metadataContext, ObjectType.DeviceRecord, deviceObjectId(device), await backend.get(remoteKeys.device(device), { signal })), device);
    if (existing.name !== name) throw new CofferError('REMOTE_CONFLICT', `device ${device} is already registered on the remote as ${JSON.stringify(existing.name)}`);
  }
}
