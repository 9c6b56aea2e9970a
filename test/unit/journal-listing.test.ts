/**
 * A poll costs what is new: a device lists another device's journal from the entry it applied
 * last, not from the start, and a journal cut back below that entry is still a rollback, named
 * with where the journal ends now. Two devices, each a real index, one file:// remote.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSodium } from '../../src/crypto/sodium.js';
import { silentLog } from '../../src/logging.js';
import { VaultIndex, S_IFREG } from '../../src/index/vault-index.js';
import { FileBackend } from '../../src/remote/file-backend.js';
import type { ListOptions, ObjectInfo } from '../../src/remote/backend.js';
import { JournalContext } from '../../src/sync/journal-context.js';
import { newDeviceState } from '../../src/sync/device-state.js';
import { publishChanges } from '../../src/sync/publisher.js';
import { pullChanges } from '../../src/sync/merger.js';
import { remoteKeys } from '../../src/remote/backend.js';

/** A file remote that counts the journal keys its listings return. */
class CountingBackend extends FileBackend {
  journalKeysListed = 0;
  override async list(prefix: string, options?: ListOptions): Promise<ObjectInfo[]> {
    const found = await super.list(prefix, options);
    if (prefix.startsWith('journals/')) this.journalKeysListed += found.length;
    return found;
  }
}

const hooks = { chunksUploaded: async () => {}, uploaded: () => {} };
let dir: string;

beforeAll(async () => {
  await loadSodium();
  dir = mkdtempSync(join(tmpdir(), 'coffer-listing-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function device(name: string, backend: CountingBackend, metadataContext: { vaultId: Uint8Array; keyEpoch: number; key: Uint8Array }): JournalContext {
  const index = new VaultIndex(':memory:', { create: { uid: 0, gid: 0, nowMs: 0 } });
  index.replica.forgetLocalChanges(); // the same empty vault on both: one root
  const stateDir = join(dir, name);
  rmSync(stateDir, { recursive: true, force: true });
  return new JournalContext(index, backend, metadataContext, stateDir, silentLog, newDeviceState(name));
}

describe('polling journals', () => {
  it('lists only the entries from the last one applied, and still refuses a journal cut back below it', async () => {
    const backend = new CountingBackend(join(dir, 'remote'));
    const metadataContext = { vaultId: randomBytes(16), keyEpoch: 0, key: randomBytes(32) };
    const a = device('a', backend, metadataContext);
    const b = device('b', backend, metadataContext);
    const signal = AbortSignal.timeout(60_000);
    const publishOne = async (name: string) => {
      a.index.createNode(1, name, { mode: S_IFREG | 0o644, uid: 0, gid: 0 }, Date.now());
      expect((await publishChanges(a, hooks, signal)).entries).toBe(1);
    };
    for (let i = 0; i < 30; i++) await publishOne(`early-${i}`);
    expect((await pullChanges(b, signal)).entries).toBe(30);
    expect(b.index.lookup(1, 'early-29')).toBeDefined();

    await publishOne('late');
    backend.journalKeysListed = 0;
    expect((await pullChanges(b, signal)).entries).toBe(1);
    expect(b.index.lookup(1, 'late')).toBeDefined();
    expect(backend.journalKeysListed).toBeLessThanOrEqual(2); // entries 30 and 31, not all 31

    backend.journalKeysListed = 0;
    expect((await pullChanges(b, signal)).entries).toBe(0);
    expect(backend.journalKeysListed).toBeLessThanOrEqual(1);

    // The remote drops the last two entries: below what b applied, so a rollback, naming the end.
    for (const seq of [30, 31]) await backend.delete(remoteKeys.journal(a.state.device, seq));
    await expect(pullChanges(b, signal)).rejects.toMatchObject({ code: 'REMOTE_ROLLBACK', message: expect.stringMatching(/entries up to 29 of device "a"/) });
  });
});
