import { resolve } from 'node:path';
import { CofferError } from '../../errors.js';
import { upgradeVault } from '../../vault/upgrade.js';
import { unlockVault } from '../../vault/vault.js';
import { obtainPassphrase } from '../passphrase.js';
import { printJson, say } from '../shared.js';
import { resolveTarget } from '../target.js';

export async function upgradeCommand(args: { vault: string; passphraseFile?: string; json?: boolean }): Promise<void> {
  const target = await resolveTarget(resolve(args.vault));
  if (target.alive && target.info) {
    throw new CofferError('ALREADY_MOUNTED', `the vault is mounted at ${target.info.mountpoint}: the mount upgrades it by itself`);
  }
  const vault = await unlockVault(args.vault, await obtainPassphrase({ passphraseFile: args.passphraseFile }));
  const result = await upgradeVault(vault, args.json ? () => {} : say);
  if (args.json) {
    printJson({ vault: vault.paths.dir, format: 2, ...result });
    return;
  }
  say(result.upgraded ? `Upgraded ${vault.paths.dir} to format 2: ${result.records} nodes in ${result.entries} journal entries.` : `${vault.paths.dir} is already in format 2.`);
}
