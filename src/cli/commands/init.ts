import { readConfig } from '../../vault/config.js';
import { initVault } from '../../vault/vault.js';
import { obtainPassphrase } from '../passphrase.js';
import { say } from '../shared.js';

export interface InitArgs {
  vault: string;
  remote?: string;
  s3Endpoint?: string;
  s3Region?: string;
  cacheSize?: number;
  passphraseFile?: string;
}

export async function initCommand(args: InitArgs): Promise<void> {
  const passphrase = await obtainPassphrase({ passphraseFile: args.passphraseFile, confirm: true });
  const paths = await initVault(args.vault, passphrase, {
    remote: args.remote,
    s3Endpoint: args.s3Endpoint,
    s3Region: args.s3Region,
    cacheSize: args.cacheSize,
  });
  const config = await readConfig(paths);
  say(`Created vault ${paths.dir} (remote ${config.remote}).`);
  say(`Mount it with: coffer mount ${args.vault} <mountpoint>`);
}
