import { open, stat } from 'node:fs/promises';
import { CofferError } from '../../errors.js';
import { vaultPaths } from '../../vault/layout.js';
import { requireVault, resolveTarget } from '../target.js';

/** Prints the end of a vault's daemon log; with `follow`, keeps printing what is appended. */
export async function logsCommand(args: { target: string; lines: number; follow: boolean }): Promise<void> {
  const vault = requireVault(await resolveTarget(args.target), args.target);
  const path = vaultPaths(vault).log;
  const size = await stat(path).then((s) => s.size, () => undefined);
  if (size === undefined) throw new CofferError('NOT_MOUNTED', `${vault} has no log yet (${path}): it is written once the vault is mounted`);
  const handle = await open(path, 'r');
  try {
    // Read back far enough for the lines asked for (log lines are short).
    const window = Math.min(size, Math.max(64 * 1024, args.lines * 400));
    const buf = Buffer.alloc(window);
    await handle.read(buf, 0, window, size - window);
    const text = buf.toString('utf8');
    const lines = text.split('\n');
    if (window < size) lines.shift(); // partial first line
    if (lines.at(-1) === '') lines.pop();
    process.stdout.write(lines.slice(-args.lines).map((l) => l + '\n').join(''));
    let position = size;
    while (args.follow) {
      await new Promise((r) => setTimeout(r, 500));
      const now = (await stat(path)).size;
      if (now < position) position = 0; // rotated or truncated
      if (now > position) {
        const more = Buffer.alloc(now - position);
        await handle.read(more, 0, more.length, position);
        process.stdout.write(more);
        position = now;
      }
    }
  } finally {
    await handle.close();
  }
}
