import { changePassphrase } from '../../vault/passwd.js';
import { unlockVault } from '../../vault/vault.js';
import { obtainPassphrase } from '../passphrase.js';
import { printJson, say } from '../shared.js';

/**
 * The current passphrase comes as usual (--passphrase-file, COFFER_PASSPHRASE, prompt);
 * the new one from --new-passphrase-file, COFFER_NEW_PASSPHRASE, or a prompt asked twice.
 */
export async function passwdCommand(args: { vault: string; passphraseFile?: string; newPassphraseFile?: string; json?: boolean }): Promise<void> {
  const vault = await unlockVault(args.vault, await obtainPassphrase({ passphraseFile: args.passphraseFile }));
  const fresh = await obtainPassphrase({ passphraseFile: args.newPassphraseFile, confirm: true, env: 'COFFER_NEW_PASSPHRASE', prompt: 'New passphrase: ' });
  // Replaces the remote's header first and the local one second; either failing throws.
  await changePassphrase(vault, fresh);
  if (args.json) {
    printJson({ vault: vault.paths.dir, remote: vault.config.remote, changed: true, localHeaderUpdated: true, remoteHeaderUpdated: true });
    return;
  }
  say(`Changed the passphrase of ${vault.paths.dir} here and on its remote; the old passphrase no longer opens it.`);
}
