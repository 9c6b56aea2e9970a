/**
 * Recovery on a machine that has never seen the vault: everything comes from the remote and the
 * passphrase. The header unlocks the keys; the new copy registers as a device of its own; the
 * newest checkpoint is loaded into a new index and the journal entries after it are merged
 * (restore.ts). Chunks are not downloaded here: they arrive when files are read. (A remote still
 * in format 1 is read from its newest snapshot, and the first mount upgrades it: format1.ts.)
 */
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { CofferError, isCofferError } from '../errors.js';
import { parseHeaderJson, serializeHeader, unlockVaultHeader } from '../crypto/header.js';
import { deriveVaultKeys } from '../crypto/keys.js';
import type { ObjectContext } from '../crypto/objects.js';
import { loadSodium } from '../crypto/sodium.js';
import { VaultIndex } from '../index/vault-index.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import { newDeviceState, writeDeviceState } from '../sync/device-state.js';
import { registerDevice } from '../sync/journal-context.js';
import { DEFAULT_CONFIG, openConfiguredBackend, tokenToKeep, writeConfig, type VaultConfig } from './config.js';
import { defaultDeviceName } from './device.js';
import { restoreFormat1Index } from './format1.js';
import { vaultPaths, type VaultPaths } from './layout.js';
import { restoreIndex, type CheckpointUsed } from './restore.js';
import { checkVolumeName, defaultVolumeName } from './volume-name.js';

export interface CloneOptions {
  /** The volume name of the new copy (names are never on the remote); default: the directory's name. */
  name?: string;
  /** What the new device is called in `coffer devices` and conflicted copies; default: the host name. */
  deviceName?: string;
  s3Endpoint?: string;
  s3Region?: string;
  cacheSize?: number;
  /** Progress and warnings for the person waiting. */
  say?: (line: string) => void;
}

export interface CloneResult {
  paths: VaultPaths;
  /** Other devices whose journals were read, and their entries applied (after the checkpoint). */
  devices: number;
  entries: number;
  /** The checkpoint the index started from, if any. */
  checkpoint?: CheckpointUsed;
  files: number;
  bytes: number;
}

export async function cloneVault(remote: string, vaultDir: string, obtainPassphrase: () => Promise<string>, options: CloneOptions = {}): Promise<CloneResult> {
  await loadSodium();
  const say = options.say ?? (() => {});
  const paths = vaultPaths(vaultDir);
  const existing: string[] = await readdir(paths.dir).catch(() => []);
  if (existing.length > 0) throw new CofferError('VAULT_EXISTS', `${paths.dir} is not empty; clone into a new or empty directory`);
  const deviceName = options.deviceName !== undefined ? checkVolumeName(options.deviceName) : defaultDeviceName();
  const config: VaultConfig = {
    ...DEFAULT_CONFIG,
    name: options.name !== undefined ? checkVolumeName(options.name) : defaultVolumeName(paths.dir),
    remote,
    ...(options.s3Endpoint !== undefined && { s3Endpoint: options.s3Endpoint }),
    ...(options.s3Region !== undefined && { s3Region: options.s3Region }),
    ...(options.cacheSize !== undefined && { cacheSize: options.cacheSize }),
    ...tokenToKeep(remote),
  };
  const backend = openConfiguredBackend(config);

  let headerBytes: Buffer;
  try {
    headerBytes = await backend.get(remoteKeys.header);
  } catch (err) {
    if (isCofferError(err, 'REMOTE_NOT_FOUND')) throw new CofferError('NOT_A_VAULT', `the remote ${backend.description} holds no Coffer vault (no ${remoteKeys.header})`);
    throw err;
  }
  const { header, masterKey } = await unlockVaultHeader(parseHeaderJson(headerBytes.toString('utf8')), await obtainPassphrase());
  const keys = deriveVaultKeys(masterKey);
  const context: ObjectContext = { vaultId: Buffer.from(header.vaultId, 'hex'), keyEpoch: header.keyEpoch, key: keys.metadata };

  await mkdir(paths.state, { recursive: true });
  await mkdir(paths.cache, { recursive: true });
  try {
    let read: { devices: number; entries: number; checkpoint?: CloneResult['checkpoint'] } = { devices: 0, entries: 0 };
    if (header.version === 1 && (await restoreFormat1Index(paths, backend, context, say))) {
      say('The remote is in format 1: the first mount upgrades it to format 2.');
    } else {
      read = await restoreFromJournals(paths, backend, context, deviceName, say);
    }
    const index = new VaultIndex(paths.index, header.version === 1 ? { upgradeFrom1: { vaultId: header.vaultId } } : {});
    let counts;
    try {
      counts = index.counts();
    } finally {
      index.close();
    }
    await writeConfig(paths, config);
    // The header goes last: a directory without it is not a vault, so a failed clone can be retried.
    await writeFile(paths.header + '.tmp', serializeHeader(header));
    await rename(paths.header + '.tmp', paths.header);
    return { paths, ...read, files: counts.files, bytes: counts.bytes };
  } catch (err) {
    for (const made of [paths.index, paths.index + '-wal', paths.index + '.tmp', paths.state, paths.cache, paths.config]) {
      await rm(made, { recursive: true, force: true }).catch(() => {});
    }
    throw err;
  }
}

/** A new index holding the vault's state, for a new device named `deviceName`, registered on the remote. */
async function restoreFromJournals(
  paths: VaultPaths,
  backend: RemoteBackend,
  context: ObjectContext,
  deviceName: string,
  say: (line: string) => void,
): Promise<{ devices: number; entries: number; checkpoint?: CloneResult['checkpoint'] }> {
  const state = { ...newDeviceState(deviceName), registered: true };
  const signal = AbortSignal.timeout(24 * 3600_000);
  await registerDevice(backend, context, state.device, state.name, signal);
  // A clone that does not finish leaves no vault (its header is written last): its index need not be durable before then.
  const restored = await restoreIndex(paths, backend, context, { ...state, seen: {} }, { persist: true, syncAtClose: true, say, signal });
  const { pulled } = restored;
  for (const { device, reason } of pulled.ignored) say(`warning: skipping devices/${device}, not a device of this vault: ${reason}`);
  if (pulled.stuck.length > 0) {
    throw new CofferError('AUTHENTICATION_FAILED', `the remote's copy of the vault cannot be trusted: ${pulled.stuck.map((s) => `device ${s.device}: ${s.reason}`).join('; ')}`);
  }
  await writeDeviceState(paths.state, restored.state);
  return { devices: Object.keys(restored.state.seen).length, entries: pulled.entries, ...(restored.checkpoint && { checkpoint: restored.checkpoint }) };
}
