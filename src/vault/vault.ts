/**
 * Creating and opening vaults: the header (keys), the local config, the index file,
 * and the remote that receives a copy of the header.
 */
import { mkdir, readdir, readFile, writeFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CofferError, isCofferError } from '../errors.js';
import { createVaultHeader, parseHeaderJson, serializeHeader, unlockVaultHeader, verifyVaultHeader, type VaultHeader } from '../crypto/header.js';
import { deriveVaultKeys, type VaultKeys } from '../crypto/keys.js';
import type { ObjectContext } from '../crypto/objects.js';
import { loadSodium } from '../crypto/sodium.js';
import { VaultIndex } from '../index/vault-index.js';
import { remoteKeys } from '../remote/backend.js';
import { vaultPaths, type VaultPaths } from './layout.js';
import { newDeviceState, writeDeviceState } from '../sync/device-state.js';
import { registerDevice } from '../sync/journal-context.js';
import { defaultDeviceName } from './device.js';
import { DEFAULT_CONFIG, openConfiguredBackend, readConfig, tokenToKeep, writeConfig, type VaultConfig } from './config.js';
import { checkVolumeName, defaultVolumeName } from './volume-name.js';

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

export interface UnlockedVault {
  paths: VaultPaths;
  header: VaultHeader;
  config: VaultConfig;
  masterKey: Uint8Array;
  keys: VaultKeys;
  dataContext: ObjectContext;
  metadataContext: ObjectContext;
}

export interface InitOptions {
  /** The volume name (checked with checkVolumeName); default: the directory's name. */
  name?: string;
  remote?: string;
  s3Endpoint?: string;
  s3Region?: string;
  cacheSize?: number;
}

export async function initVault(vaultDir: string, passphrase: string, options: InitOptions = {}): Promise<VaultPaths> {
  await loadSodium();
  const paths = vaultPaths(vaultDir);
  let dirExisted = true;
  const existing: string[] = await readdir(paths.dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    dirExisted = false;
    return [];
  });
  if (existing.includes('vault.json')) throw new CofferError('VAULT_EXISTS', `${paths.dir} already holds a vault`);
  if (existing.length > 0) throw new CofferError('VAULT_EXISTS', `${paths.dir} is not empty; choose a new or empty directory`);
  const config: VaultConfig = {
    ...DEFAULT_CONFIG,
    name: options.name !== undefined ? checkVolumeName(options.name) : defaultVolumeName(paths.dir),
    remote: options.remote ?? pathToFileURL(paths.embeddedRemote).href,
    ...(options.s3Endpoint !== undefined && { s3Endpoint: options.s3Endpoint }),
    ...(options.s3Region !== undefined && { s3Region: options.s3Region }),
    ...(options.cacheSize !== undefined && { cacheSize: options.cacheSize }),
    ...tokenToKeep(options.remote ?? ''),
  };
  const backend = openConfiguredBackend(config);
  const { header, masterKey } = await createVaultHeader(passphrase, { chunkSize: DEFAULT_CHUNK_SIZE });

  try {
    await mkdir(paths.state, { recursive: true });
    await mkdir(paths.cache, { recursive: true });
    if (!options.remote) await mkdir(paths.embeddedRemote, { recursive: true });
    const now = Date.now();
    new VaultIndex(paths.index, { create: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, nowMs: now } }).close();
    await writeConfig(paths, config);
    await backend.createExclusive(remoteKeys.header, Buffer.from(serializeHeader(header))).catch((err) => {
      if (isCofferError(err, 'REMOTE_EXISTS')) {
        throw new CofferError('VAULT_EXISTS', `the remote ${backend.description} already holds a vault`);
      }
      throw err;
    });
    const device = { ...newDeviceState(defaultDeviceName()), registered: true };
    const keys = deriveVaultKeys(masterKey);
    await registerDevice(backend, { vaultId: Buffer.from(header.vaultId, 'hex'), keyEpoch: header.keyEpoch, key: keys.metadata }, device.device, device.name);
    await writeDeviceState(paths.state, device);
    // The header goes last: a directory without it is not a vault.
    await writeFile(paths.header + '.tmp', serializeHeader(header));
    await rename(paths.header + '.tmp', paths.header);
  } catch (err) {
    // The directory was new or empty: leave it so again, and the same init can simply be retried.
    if (dirExisted) {
      for (const entry of await readdir(paths.dir).catch(() => [])) await rm(join(paths.dir, entry), { recursive: true, force: true });
    } else {
      await rm(paths.dir, { recursive: true, force: true });
    }
    throw err;
  }
  return paths;
}

export async function readVaultHeaderRaw(vaultDir: string): Promise<unknown> {
  const paths = vaultPaths(vaultDir);
  let text: string;
  try {
    text = await readFile(paths.header, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CofferError('NOT_A_VAULT', `${paths.dir} is not a Coffer vault (no vault.json); create one with: coffer init ${vaultDir}`);
    }
    throw err;
  }
  return parseHeaderJson(text);
}

export async function isVaultDir(dir: string): Promise<boolean> {
  return stat(vaultPaths(dir).header).then(
    () => true,
    () => false,
  );
}

/** Unlocks with a passphrase: runs the KDF (about a second, by design). */
export async function unlockVault(vaultDir: string, passphrase: string): Promise<UnlockedVault> {
  await loadSodium();
  const raw = await readVaultHeaderRaw(vaultDir);
  const { header, masterKey } = await unlockVaultHeader(raw, passphrase);
  return assemble(vaultDir, header, masterKey);
}

/** Opens with a master key already unwrapped by the process that asked for the passphrase. */
export async function openVaultWithKey(vaultDir: string, masterKey: Uint8Array): Promise<UnlockedVault> {
  await loadSodium();
  const raw = await readVaultHeaderRaw(vaultDir);
  return assemble(vaultDir, verifyVaultHeader(raw, masterKey), masterKey);
}

async function assemble(vaultDir: string, header: VaultHeader, masterKey: Uint8Array): Promise<UnlockedVault> {
  const paths = vaultPaths(vaultDir);
  const keys = deriveVaultKeys(masterKey);
  const vaultId = Buffer.from(header.vaultId, 'hex');
  return {
    paths,
    header,
    config: await readConfig(paths),
    masterKey,
    keys,
    dataContext: { vaultId, keyEpoch: header.keyEpoch, key: keys.chunk },
    metadataContext: { vaultId, keyEpoch: header.keyEpoch, key: keys.metadata },
  };
}
