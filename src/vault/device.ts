/**
 * This copy of the vault as a device of it: its state (sync/device-state.ts) created with a name
 * and registered on the remote, and format-1 vaults upgraded to format 2 on the way
 * (docs/FORMAT.md, "Upgrading from format 1"). Every step can be repeated, so an upgrade that was
 * interrupted resumes at the next mount or `coffer upgrade`.
 */
import { hostname } from 'node:os';
import { writeFile, rename } from 'node:fs/promises';
import { serializeHeader, upgradeHeaderVersion } from '../crypto/header.js';
import { VaultIndex } from '../index/vault-index.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import { newDeviceState, readDeviceState, writeDeviceState, type DeviceState } from '../sync/device-state.js';
import { registerDevice } from '../sync/journal-context.js';
import type { UnlockedVault } from './vault.js';

/** What a device is called unless the user names it: the machine's host name. */
export function defaultDeviceName(): string {
  return hostname() || 'device';
}

/**
 * The device state of an opened vault, made and registered if missing; a format-1 vault's index
 * is upgraded to schema 2 here and the state marked `upgrading` until `finishUpgrade`.
 * Registering needs the remote: when it cannot be reached, the device registers at its first publish.
 */
export async function prepareDevice(vault: UnlockedVault, backend: RemoteBackend, signal?: AbortSignal): Promise<DeviceState> {
  const { paths } = vault;
  const found = await readDeviceState(paths.state);
  let state: DeviceState;
  if (found && !('format1' in found)) {
    state = found;
  } else {
    state = { ...newDeviceState(defaultDeviceName()), upgrading: vault.header.version === 1 };
    await writeDeviceState(paths.state, state);
  }
  if (vault.header.version === 1) {
    // Opening with upgradeFrom1 upgrades a schema-1 index in one transaction (and is a no-op on schema 2).
    new VaultIndex(paths.index, { upgradeFrom1: { vaultId: vault.header.vaultId } }).close();
  }
  if (!state.registered) {
    try {
      await registerDevice(backend, vault.metadataContext, state.device, state.name, signal);
      state = { ...state, registered: true };
      await writeDeviceState(paths.state, state);
    } catch {
      // Offline or refused: the mount reports the remote's state; the publisher registers later.
    }
  }
  return state;
}

/**
 * The last step of an upgrade, once this device's whole tree is in its journal: the header says
 * format 2, locally and on the remote (so clones read the journals).
 */
export async function finishUpgrade(vault: UnlockedVault, backend: RemoteBackend, state: DeviceState, signal?: AbortSignal): Promise<DeviceState> {
  const header = vault.header.version === 2 ? vault.header : upgradeHeaderVersion(vault.header, vault.masterKey);
  const text = serializeHeader(header);
  await backend.put(remoteKeys.header, Buffer.from(text), { signal });
  await writeFile(vault.paths.header + '.tmp', text);
  await rename(vault.paths.header + '.tmp', vault.paths.header);
  vault.header = header;
  const done = { ...state, upgrading: false };
  await writeDeviceState(vault.paths.state, done);
  return done;
}
