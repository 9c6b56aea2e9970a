/**
 * Where a passphrase comes from, in order: --passphrase-file, COFFER_PASSPHRASE,
 * a hidden prompt on a terminal. Never from the command line itself (it would show
 * in `ps` and shell history).
 */
import { readFile } from 'node:fs/promises';
import { CofferError } from '../errors.js';

export interface PassphraseSource {
  passphraseFile?: string;
  /** Ask twice on a terminal (when creating a vault or changing the passphrase). */
  confirm?: boolean;
  /** The environment variable to read (default COFFER_PASSPHRASE). */
  env?: string;
  prompt?: string;
}

export async function obtainPassphrase(source: PassphraseSource): Promise<string> {
  if (source.passphraseFile) {
    let text: string;
    try {
      text = await readFile(source.passphraseFile, 'utf8');
    } catch (err) {
      throw new CofferError('NO_PASSPHRASE', `cannot read the passphrase file ${source.passphraseFile}: ${(err as Error).message}`);
    }
    return nonEmpty(text.replace(/\r?\n$/, ''), `the passphrase file ${source.passphraseFile} is empty`);
  }
  const variable = source.env ?? 'COFFER_PASSPHRASE';
  const fromEnv = process.env[variable];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (process.stdin.isTTY) {
    const first = nonEmpty(await promptHidden(source.prompt ?? 'Passphrase: '), 'the passphrase must not be empty');
    if (source.confirm) {
      const second = await promptHidden('Repeat: ');
      if (first !== second) throw new CofferError('NO_PASSPHRASE', 'the two passphrases differ; nothing was changed');
    }
    return first;
  }
  throw new CofferError(
    'NO_PASSPHRASE',
    `no passphrase given: set ${variable}, pass ${variable === 'COFFER_PASSPHRASE' ? '--passphrase-file' : '--new-passphrase-file'} <path>, or run the command in a terminal`,
  );
}

function nonEmpty(value: string, message: string): string {
  if (value === '') throw new CofferError('NO_PASSPHRASE', message);
  return value;
}

function promptHidden(query: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(query);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    let input = '';
    const finish = (error?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (error) reject(error);
      else resolve(input);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return finish();
        if (ch === '\u0003') return finish(new CofferError('NO_PASSPHRASE', 'cancelled'));
        if (ch === '\u007f' || ch === '\b') input = input.slice(0, -1);
        else input += ch;
      }
    };
    stdin.on('data', onData);
  });
}
