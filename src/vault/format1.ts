/**
 * Reading a format-1 remote: the newest manifest that authenticates names a snapshot of a whole
 * (schema 1) index, which becomes the local index; the first mount then upgrades it
 * (upgrade.ts). Only `clone` of a remote no device has upgraded yet comes here.
 */
import { rename, writeFile } from 'node:fs/promises';
import { CofferError, isCofferError } from '../errors.js';
import { ObjectType, openObject, type ObjectContext } from '../crypto/objects.js';
import { sodium } from '../crypto/sodium.js';
import { remoteKeys, type RemoteBackend } from '../remote/backend.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import type { VaultPaths } from './layout.js';

/** A format-1 manifest (docs/FORMAT.md, "Format 1: manifests"). */
export interface Manifest {
  format: 'coffer-manifest';
  version: 1;
  counter: number;
  writer: string;
  previous: string | null;
  created: string;
  indexSchema: number;
  snapshot: { size: number; parts: string[] };
}

/** The 32-byte object id of manifest `counter`: the counter, big-endian, in the last 8 bytes. */
export function manifestObjectId(counter: number): Buffer {
  const id = Buffer.alloc(32);
  id.writeBigUInt64BE(BigInt(counter), 24);
  return id;
}

function manifestHash(sealed: Uint8Array): string {
  return Buffer.from(sodium().crypto_generichash(32, sealed, null)).toString('hex');
}

/**
 * Writes `paths.index` (schema 1) from the newest manifest on the remote that authenticates and
 * records it as the format-1 high-water mark. Answers false when no manifest was ever published.
 */
export async function restoreFormat1Index(paths: VaultPaths, backend: RemoteBackend, context: ObjectContext, say: (line: string) => void): Promise<boolean> {
  const newest = await newestValidManifest(backend, context, say);
  if (!newest) return false;
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
  await writeFileAtomic(`${paths.state}/sync-state.json`, JSON.stringify({ lastManifest: manifest.counter, lastManifestHash: manifestHash(sealed), lastPublishMs: null }, null, 2) + '\n');
  return true;
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
