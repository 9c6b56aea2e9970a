import { readConfig, volumeName } from '../../vault/config.js';
import { cloneVault } from '../../vault/clone.js';
import { checkVolumeName } from '../../vault/volume-name.js';
import { formatBytes } from '../format.js';
import { obtainPassphrase } from '../passphrase.js';
import { printJson, say } from '../shared.js';

export interface CloneArgs {
  remote: string;
  vault: string;
  name?: string;
  deviceName?: string;
  s3Endpoint?: string;
  s3Region?: string;
  cacheSize?: number;
  passphraseFile?: string;
  json?: boolean;
}

export async function cloneCommand(args: CloneArgs): Promise<void> {
  const name = args.name === undefined ? undefined : checkVolumeName(args.name);
  const deviceName = args.deviceName === undefined ? undefined : checkVolumeName(args.deviceName, 'device name');
  const started = Date.now();
  const result = await cloneVault(args.remote, args.vault, () => obtainPassphrase({ passphraseFile: args.passphraseFile }), {
    name,
    deviceName,
    s3Endpoint: args.s3Endpoint,
    s3Region: args.s3Region,
    cacheSize: args.cacheSize,
    say,
  });
  const elapsedMs = Date.now() - started;
  if (args.json) {
    const config = await readConfig(result.paths);
    printJson({
      vault: result.paths.dir,
      remote: config.remote,
      name: volumeName(config, result.paths),
      devices: result.devices,
      entries: result.entries,
      checkpoint: result.checkpoint ?? null,
      files: result.files,
      bytes: result.bytes,
      cacheSizeBytes: config.cacheSize,
      elapsedMs,
    });
    return;
  }
  say(
    `Cloned ${args.remote} into ${result.paths.dir} (${result.checkpoint ? `checkpoint ${result.checkpoint.seq} of "${result.checkpoint.deviceName}" and ` : ''}${result.entries} journal entries of ${result.devices} device${result.devices === 1 ? '' : 's'}): ${result.files} files (${formatBytes(result.bytes)}) ` +
      `in ${(elapsedMs / 1000).toFixed(1)} s. File contents download when read.`,
  );
  say(`Mount it with: coffer mount ${args.vault} <mountpoint>`);
}
