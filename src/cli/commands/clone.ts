import { cloneVault } from '../../vault/clone.js';
import { checkVolumeName } from '../../vault/volume-name.js';
import { formatBytes } from '../format.js';
import { obtainPassphrase } from '../passphrase.js';
import { say } from '../shared.js';

export interface CloneArgs {
  remote: string;
  vault: string;
  name?: string;
  s3Endpoint?: string;
  s3Region?: string;
  cacheSize?: number;
  passphraseFile?: string;
}

export async function cloneCommand(args: CloneArgs): Promise<void> {
  const name = args.name === undefined ? undefined : checkVolumeName(args.name);
  const started = Date.now();
  const result = await cloneVault(args.remote, args.vault, () => obtainPassphrase({ passphraseFile: args.passphraseFile }), {
    name,
    s3Endpoint: args.s3Endpoint,
    s3Region: args.s3Region,
    cacheSize: args.cacheSize,
    say,
  });
  say(
    `Cloned ${args.remote} into ${result.paths.dir} from manifest ${result.manifest}: ${result.files} files (${formatBytes(result.bytes)}) ` +
      `in ${((Date.now() - started) / 1000).toFixed(1)} s. File contents download when read.`,
  );
  say(`Mount it with: coffer mount ${args.vault} <mountpoint>`);
}
