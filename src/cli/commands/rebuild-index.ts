import { join, resolve } from 'node:path';
import { CofferError } from '../../errors.js';
import { rebuildIndex } from '../../vault/rebuild.js';
import { unlockVault } from '../../vault/vault.js';
import { formatBytes } from '../format.js';
import { obtainPassphrase } from '../passphrase.js';
import { printJson, say } from '../shared.js';
import { resolveTarget } from '../target.js';

export async function rebuildIndexCommand(args: { vault: string; passphraseFile?: string; json?: boolean }): Promise<void> {
  const target = await resolveTarget(resolve(args.vault));
  if (target.alive && target.info) {
    throw new CofferError('ALREADY_MOUNTED', `unmount the vault first: coffer unmount ${target.info.mountpoint}`);
  }
  const vault = await unlockVault(args.vault, await obtainPassphrase({ passphraseFile: args.passphraseFile }));
  const result = await rebuildIndex(vault, say);
  const keptDir = join(vault.paths.lostFound, 'chunks');
  if (args.json) {
    printJson({
      vault: vault.paths.dir,
      remote: vault.config.remote,
      entries: result.entries,
      checkpoint: result.checkpoint ?? null,
      files: result.files,
      bytes: result.bytes,
      setAside: result.setAside,
      chunksKeptAside: result.chunksKeptAside,
      chunksKeptAsideDir: result.chunksKeptAside > 0 ? keptDir : null,
    });
    return;
  }
  for (const file of result.setAside) say(`Kept the old index file as ${file}.`);
  const after = result.checkpoint ? ` after checkpoint ${result.checkpoint.seq} of "${result.checkpoint.deviceName}"` : '';
  say(`Rebuilt the index from ${result.entries} journal entries on the remote${after}: ${result.files} files (${formatBytes(result.bytes)}).`);
  if (result.chunksKeptAside > 0) {
    say(
      `${result.chunksKeptAside} cached chunks that the remote's index does not name (written after its last publish) ` +
        `were moved to ${keptDir}; nothing was deleted.`,
    );
  }
}
