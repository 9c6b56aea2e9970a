import { readConfig, volumeName } from '../../vault/config.js';
import { initVault } from '../../vault/vault.js';
import { checkVolumeName } from '../../vault/volume-name.js';
import { obtainPassphrase } from '../passphrase.js';
import { printJson, say } from '../shared.js';

export interface InitArgs {
  vault: string;
  name?: string;
  remote?: string;
  s3Endpoint?: string;
  s3Region?: string;
  cacheSize?: number;
  passphraseFile?: string;
  json?: boolean;
}

export async function initCommand(args: InitArgs): Promise<void> {
  // A bad name is a bad command line: refused before a passphrase is asked for.
  const name = args.name === undefined ? undefined : checkVolumeName(args.name);
  const passphrase = await obtainPassphrase({ passphraseFile: args.passphraseFile, confirm: true });
  const paths = await initVault(args.vault, passphrase, {
    name,
    remote: args.remote,
    s3Endpoint: args.s3Endpoint,
    s3Region: args.s3Region,
    cacheSize: args.cacheSize,
  });
  const config = await readConfig(paths);
  if (args.json) {
    printJson({
      vault: paths.dir,
      name: volumeName(config, paths),
      remote: config.remote,
      s3Endpoint: config.s3Endpoint ?? null,
      s3Region: config.s3Region ?? null,
      cacheSizeBytes: config.cacheSize,
    });
    return;
  }
  say(`Created vault ${paths.dir} named ${JSON.stringify(volumeName(config, paths))} (remote ${config.remote}).`);
  say(`Mount it with: coffer mount ${args.vault} <mountpoint>`);
}
