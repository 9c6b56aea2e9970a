import { resolve } from 'node:path';
import { CofferError } from '../../errors.js';
import { fsckVault } from '../../vault/fsck.js';
import { unlockVault } from '../../vault/vault.js';
import { obtainPassphrase } from '../passphrase.js';
import { ProgressLine } from '../progress.js';
import { say } from '../shared.js';
import { resolveTarget } from '../target.js';

export async function fsckCommand(args: { vault: string; remote: boolean; json: boolean; passphraseFile?: string }): Promise<void> {
  const target = await resolveTarget(resolve(args.vault));
  if (target.alive && target.info) {
    throw new CofferError('ALREADY_MOUNTED', `unmount the vault before checking it: coffer unmount ${target.info.mountpoint}`);
  }
  const vault = await unlockVault(args.vault, await obtainPassphrase({ passphraseFile: args.passphraseFile }));
  const line = new ProgressLine();
  const report = await fsckVault(vault, { remote: args.remote, onProgress: (done, total) => line.update(`checked ${done} of ${total} chunks`) });
  if (args.json) {
    process.stdout.write(JSON.stringify(report) + '\n');
  } else {
    line.done(
      `Checked ${report.checked.inodes} inodes and ${report.checked.chunks} chunks (${report.checked.localChunks} local` +
        `${args.remote ? `, ${report.checked.remoteChunks} on the remote` : ''}).`,
    );
    for (const problem of report.problems) {
      say(`problem: ${problem.message}`);
      for (const range of problem.affected ?? []) say(`  affects ${range.path} bytes ${range.offset}..${range.offset + range.length}`);
    }
  }
  if (!report.ok) throw new CofferError('CORRUPT_FORMAT', `fsck found ${report.problems.length} problem(s)`);
  if (!args.json) say('No problems found.');
}
