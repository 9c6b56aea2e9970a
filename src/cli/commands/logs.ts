import { open, readdir, readFile, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { CofferError } from '../../errors.js';
import { formatLogLine, parseLogLine } from '../../daemon/log-format.js';
import { vaultPaths } from '../../vault/layout.js';
import { requireVault, resolveTarget } from '../target.js';

export interface LogsArgs {
  target: string;
  lines: number;
  follow: boolean;
  /** Raw JSON lines instead of lines for people. */
  json: boolean;
}

const FOLLOW_POLL_MS = 300;
const READ_BLOCK = 64 * 1024;

/**
 * Prints the end of a vault's daemon log — reading the rotated files (`daemon.log.1`, `.2`, …)
 * too when the current one holds fewer lines than asked for — and with `follow` keeps printing
 * what is appended, also after the daemon rotates the file.
 */
export async function logsCommand(args: LogsArgs): Promise<void> {
  if (!Number.isSafeInteger(args.lines) || args.lines < 0) {
    throw new CofferError('BAD_ARGUMENT', `--lines must be a whole number of lines, 0 or more (got ${args.lines})`);
  }
  const vault = requireVault(await resolveTarget(args.target), args.target);
  const path = vaultPaths(vault).log;
  const files = await logFiles(path);
  if (files.length === 0) throw new CofferError('NOT_MOUNTED', `${vault} has no log yet (${path}): it is written once the vault is mounted`);
  const render = args.json ? asJsonLine : formatLogLine;
  const emit = (lines: string[]): void => {
    const text = lines.filter((line) => line !== '').map((line) => render(line) + '\n').join('');
    if (text) process.stdout.write(text);
  };

  // Newest first: take what the current file has, then older files for the rest.
  const pieces: string[][] = [];
  let wanted = args.lines;
  let followed: Followed | undefined;
  for (const file of files) {
    if (wanted <= 0 && !(args.follow && file === path && !followed)) break;
    const handle = await open(file, 'r').catch(() => undefined); // rotated away meanwhile
    if (!handle) continue;
    const { size, ino } = await handle.stat();
    const lines = await lastLines(handle, size, wanted);
    pieces.unshift(lines);
    wanted -= lines.length;
    if (args.follow && file === path) followed = { handle, ino, position: size, decoder: new StringDecoder('utf8'), rest: '', idlePolls: 0 };
    else await handle.close();
  }
  emit(pieces.flat());
  if (args.follow) await follow(path, followed, emit);
}

/** The current log and its rotated files, newest first: daemon.log, (daemon.log.0,) daemon.log.1, daemon.log.2, … */
async function logFiles(path: string): Promise<string[]> {
  const dir = dirname(path);
  const name = basename(path);
  const entries = await readdir(dir).catch(() => [] as string[]);
  const rotated = entries
    .map((entry) => ({ entry, n: entry.startsWith(`${name}.`) ? Number(entry.slice(name.length + 1)) : NaN }))
    .filter(({ n }) => Number.isSafeInteger(n) && n >= 0) // .0 is the current file during a rotation
    .sort((a, b) => a.n - b.n)
    .map(({ entry }) => join(dir, entry));
  return [...(entries.includes(name) ? [path] : []), ...rotated];
}

/** The last `count` lines of the first `size` bytes of a file, read from the end backwards. */
async function lastLines(handle: FileHandle, size: number, count: number): Promise<string[]> {
  if (count <= 0 || size === 0) return [];
  const blocks: Buffer[] = [];
  let start = size;
  let newlines = 0;
  // One newline more than lines wanted, so the first line kept is whole.
  while (start > 0 && newlines <= count) {
    const from = Math.max(0, start - READ_BLOCK);
    const block = Buffer.alloc(start - from);
    const { bytesRead } = await handle.read(block, 0, block.length, from);
    const got = block.subarray(0, bytesRead);
    for (let at = got.indexOf(10); at !== -1; at = got.indexOf(10, at + 1)) newlines++;
    blocks.unshift(got);
    start = from;
  }
  const lines = Buffer.concat(blocks).toString('utf8').split('\n');
  if (start > 0) lines.shift(); // the start of a line further back
  if (lines.at(-1) === '') lines.pop();
  return lines.slice(-count);
}

interface Followed {
  handle: FileHandle;
  ino: number;
  position: number;
  decoder: StringDecoder;
  /** The start of a line whose end has not been written yet. */
  rest: string;
  idlePolls: number;
}

/**
 * Polls the log for new lines until interrupted. A rotation shows as a new file under the log's
 * name: the old one (renamed to daemon.log.1, still open here) is read to its end — the daemon
 * may still finish a few lines there — then left, and the new one is read from its start.
 */
async function follow(path: string, first: Followed | undefined, emit: (lines: string[]) => void): Promise<never> {
  let current = first;
  let draining: Followed[] = [];
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, FOLLOW_POLL_MS));
    for (const old of draining) await readNew(old, emit);
    const done = draining.filter((old) => old.idlePolls >= 3);
    for (const old of done) {
      if (old.rest) emit([old.rest]);
      await old.handle.close();
    }
    draining = draining.filter((old) => !done.includes(old));
    if (current) await readNew(current, emit);
    const now = await stat(path).catch(() => undefined);
    if (!now) continue; // between the rename and the daemon's reopen
    if (current && now.ino === current.ino) {
      if (now.size < current.position) {
        current.position = 0; // truncated in place
        current.rest = '';
      }
      continue;
    }
    const handle = await open(path, 'r').catch(() => undefined);
    if (!handle) continue;
    if (current) {
      // Rotated more than once since the last look: the files in between are complete.
      for (const missed of await rotatedSince(path, current.ino)) {
        const text = await readFile(missed, 'utf8').catch(() => '');
        emit(text.split('\n'));
      }
      draining.push(current);
    }
    current = { handle, ino: (await handle.stat()).ino, position: 0, decoder: new StringDecoder('utf8'), rest: '', idlePolls: 0 };
    await readNew(current, emit);
  }
}

/** Rotated files newer than the one with inode `ino`, oldest first (all of them if it is gone). */
async function rotatedSince(path: string, ino: number): Promise<string[]> {
  const rotated = (await logFiles(path)).filter((file) => file !== path);
  const newer: string[] = [];
  for (const file of rotated) {
    const info = await stat(file).catch(() => undefined);
    if (info?.ino === ino) break;
    if (info) newer.push(file);
  }
  return newer.reverse();
}

async function readNew(file: Followed, emit: (lines: string[]) => void): Promise<void> {
  const { size } = await file.handle.stat();
  if (size <= file.position) {
    file.idlePolls++;
    return;
  }
  file.idlePolls = 0;
  while (file.position < size) {
    const block = Buffer.alloc(Math.min(READ_BLOCK * 16, size - file.position));
    const { bytesRead } = await file.handle.read(block, 0, block.length, file.position);
    if (bytesRead === 0) break;
    file.position += bytesRead;
    const lines = (file.rest + file.decoder.write(block.subarray(0, bytesRead))).split('\n');
    file.rest = lines.pop()!;
    emit(lines);
  }
}

/** A line for `--json`: log lines as they are; anything else wrapped, so every line parses. */
function asJsonLine(line: string): string {
  return parseLogLine(line) ? line : JSON.stringify({ unstructured: line });
}
