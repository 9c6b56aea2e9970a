/**
 * Recovery on a machine that has never seen the vault: everything comes from the
 * remote and the passphrase. The header unlocks the keys; the newest manifest that
 * authenticates names the index snapshot; the snapshot becomes the local index.
 * Chunks are not downloaded here: they arrive when files are read.
 */
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { CofferError, isCofferError } from '../errors.js';
import { parseHeaderJson, serializeHeader, unlockVaultHeader } from '../crypto/header.js';
import { deriveVaultKeys } from '../crypto/keys.js';
import { ObjectType, openObject, type ObjectContext } from '../crypto/objects.js';
import { loadSodium } from '../crypto/sodium.js';
import { VaultIndex } from '../index/vault-index.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import { manifestHash, manifestObjectId, writeSyncState, type Manifest } from '../sync/syncer.js';
import { DEFAULT_CONFIG, openConfiguredBackend, tokenToKeep, writeConfig, type VaultConfig } from './config.js';
import { vaultPaths, type VaultPaths } from './layout.js';
import { checkVolumeName, defaultVolumeName } from './volume-name.js';

export interface CloneOptions {
  /** The volume name of the new copy (names are never on the remote); default: the directory's name. */
  name?: string;
  s3Endpoint?: string;
  s3Region?: string;
  cacheSize?: number;
  /** Progress and warnings for the person waiting. */
  say?: (line: string) => void;
}

export interface CloneResult {
  paths: VaultPaths;
  /** The manifest the index was rebuilt from (0: nothing was ever published). */
  manifest: number;
  files: number;
  bytes: number;
}

export async function cloneVault(remote: string, vaultDir: string, obtainPassphrase: () => Promise<string>, options: CloneOptions = {}): Promise<CloneResult> {
  await loadSodium();
  const say = options.say ?? (() => {});
  const paths = vaultPaths(vaultDir);
  const existing: string[] = await readdir(paths.dir).catch(() => []);
  if (existing.length > 0) throw new CofferError('VAULT_EXISTS', `${paths.dir} is not empty; clone into a new or empty directory`);
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
  const { header, masterKey } = unlockVaultHeader(parseHeaderJson(headerBytes.toString('utf8')), await obtainPassphrase());
  const keys = deriveVaultKeys(masterKey);
  const context: ObjectContext = { vaultId: Buffer.from(header.vaultId, 'hex'), keyEpoch: header.keyEpoch, key: keys.metadata };

  await mkdir(paths.state, { recursive: true });
  await mkdir(paths.cache, { recursive: true });
  try {
    const restored = await restoreIndex(paths, backend, context, 0, say);
    await writeConfig(paths, config);
    // The header goes last: a directory without it is not a vault, so a failed clone can be retried.
    await writeFile(paths.header + '.tmp', serializeHeader(header));
    await rename(paths.header + '.tmp', paths.header);
    return { paths, ...restored };
  } catch (err) {
    for (const made of [paths.index, paths.index + '.tmp', paths.state, paths.cache, paths.config]) {
      await rm(made, { recursive: true, force: true }).catch(() => {});
    }
    throw err;
  }
}

/**
 * Writes `paths.index` from the newest manifest on the remote that authenticates (an empty
 * index if none was ever published) and records it as the high-water mark. A newest manifest
 * older than `highWater` is a rollback and is refused.
 */
export async function restoreIndex(
  paths: VaultPaths,
  backend: RemoteBackend,
  context: ObjectContext,
  highWater: number,
  say: (line: string) => void,
): Promise<{ manifest: number; files: number; bytes: number }> {
  const newest = await newestValidManifest(backend, context, say);
  if ((newest?.manifest.counter ?? 0) < highWater) {
    throw new CofferError(
      'REMOTE_ROLLBACK',
      `the newest manifest on the remote is ${newest?.manifest.counter ?? 'none'}, older than manifest ${highWater} this vault already published: refusing to restore from a rolled-back remote`,
    );
  }
  if (newest) {
    const { manifest, sealed } = newest;
    const parts: Buffer[] = [];
    for (const part of manifest.snapshot.parts) {
      const id = Buffer.from(part, 'hex');
      parts.push(openObject(context, ObjectType.SnapshotPart, id, await backend.get(remoteKeys.snapshotPart(part))));
    }
    const snapshot = Buffer.concat(parts);
    if (snapshot.length !== manifest.snapshot.size) {
      throw new CofferError('CORRUPT_FORMAT', `the snapshot of manifest ${manifest.counter} has ${snapshot.length} bytes, not the ${manifest.snapshot.size} its manifest names`);
    }
    await writeFile(paths.index + '.tmp', snapshot);
    await rename(paths.index + '.tmp', paths.index);
    await writeSyncState(paths.state, { lastManifest: manifest.counter, lastManifestHash: manifestHash(sealed), lastPublishMs: null });
  } else {
    say('The remote holds no published index yet: the index starts empty.');
    new VaultIndex(paths.index, { create: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, nowMs: Date.now() } }).close();
  }
  const index = new VaultIndex(paths.index);
  try {
    const check = index.db.pragma('integrity_check', { simple: true });
    if (check !== 'ok') throw new CofferError('CORRUPT_FORMAT', `the restored index fails SQLite's integrity check: ${String(check)}`);
    index.setState('published', 1);
    const counts = index.counts();
    return { manifest: newest?.manifest.counter ?? 0, files: counts.files, bytes: counts.bytes };
  } finally {
    index.close();
  }
}

/**
 * The highest-numbered manifest that authenticates. One that does not is skipped with a
 * warning (never trusted); its predecessor's hash is checked where it is present.
 */
async function newestValidManifest(
  backend: RemoteBackend,
  context: ObjectContext,
  say: (line: string) => void,
): Promise<{ manifest: Manifest; sealed: Buffer } | undefined> {
  const counters = (await backend.list(remoteKeys.manifestPrefix))
    .map((o) => Number(o.key.slice(remoteKeys.manifestPrefix.length)))
    .filter((n) => Number.isSafeInteger(n) && n > 0)
    .sort((a, b) => b - a);
  for (const counter of counters) {
    try {
      const sealed = await backend.get(remoteKeys.manifest(counter));
      const manifest = JSON.parse(openObject(context, ObjectType.Manifest, manifestObjectId(counter), sealed).toString('utf8')) as Manifest;
      if (manifest.format !== 'coffer-manifest' || manifest.version !== 1 || manifest.counter !== counter) {
        throw new CofferError('CORRUPT_FORMAT', `manifest ${counter} does not describe itself as manifest ${counter}`);
      }
      return { manifest, sealed };
    } catch (err) {
      if (isCofferError(err, 'REMOTE_UNAVAILABLE')) throw err;
      say(`warning: skipping manifest ${counter}: ${(err as Error).message}`);
    }
  }
  return undefined;
}
