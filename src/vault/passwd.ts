/**
 * Changing the passphrase: the same master key is wrapped anew (new salt) and the header
 * is replaced here and on the remote, so the old passphrase opens neither. Nothing else
 * changes: no chunk, snapshot or manifest is touched.
 */
import { rename, writeFile } from 'node:fs/promises';
import { rewrapVaultHeader, serializeHeader } from '../crypto/header.js';
import { remoteKeys } from '../remote/backend.js';
import { openConfiguredBackend } from './config.js';
import type { UnlockedVault } from './vault.js';

export async function changePassphrase(vault: UnlockedVault, newPassphrase: string): Promise<void> {
  const header = await rewrapVaultHeader(vault.header, vault.masterKey, newPassphrase);
  const text = serializeHeader(header);
  // Remote first: if it fails, the local header still matches what the remote holds.
  await openConfiguredBackend(vault.config).put(remoteKeys.header, Buffer.from(text));
  await writeFile(vault.paths.header + '.tmp', text);
  await rename(vault.paths.header + '.tmp', vault.paths.header);
}
