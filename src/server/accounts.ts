/**
 * Accounts of a `coffer serve` data directory, kept in `<data>/accounts.json` (mode 0600).
 * A token is 32 random bytes shown once when issued; only its SHA-256 is stored, which is
 * enough for a secret of that much entropy (no slow hash needed: nothing to brute-force).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CofferError } from '../errors.js';

export interface Account {
  /** Random hex id; the account's objects live in `<data>/accounts/<id>/objects/`. */
  id: string;
  name: string;
  /** SHA-256 (hex) of each token issued to the account. */
  tokenHashes: string[];
  /** Bytes the account may store in all; 0 for no limit. */
  quotaBytes: number;
  /** Objects the account may store in all; 0 for no limit. */
  quotaObjects: number;
  created: string;
}

interface AccountsFile {
  version: 1;
  accounts: Account[];
}

export const TOKEN_PREFIX = 'cft_';

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function accountsPath(dataDir: string): string {
  return join(dataDir, 'accounts.json');
}

export async function readAccounts(dataDir: string): Promise<Account[]> {
  let text: string;
  try {
    text = await readFile(accountsPath(dataDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const parsed = JSON.parse(text) as AccountsFile;
  if (parsed.version !== 1 || !Array.isArray(parsed.accounts)) {
    throw new CofferError('CORRUPT_FORMAT', `${accountsPath(dataDir)} is not a coffer serve accounts file`);
  }
  return parsed.accounts;
}

async function writeAccounts(dataDir: string, accounts: Account[]): Promise<void> {
  const path = accountsPath(dataDir);
  const temp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, JSON.stringify({ version: 1, accounts } satisfies AccountsFile, null, 2) + '\n', { mode: 0o600 });
  await rename(temp, path);
}

/** Creates an account and its first token; the token is returned once and never stored. */
export async function addAccount(
  dataDir: string,
  name: string,
  quota: { bytes?: number; objects?: number } = {},
): Promise<{ account: Account; token: string }> {
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
    throw new CofferError('BAD_ARGUMENT', `account name ${JSON.stringify(name)}: use 1 to 64 letters, digits, ".", "_", "@" or "-"`);
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const accounts = await readAccounts(dataDir);
  if (accounts.some((a) => a.name === name)) throw new CofferError('BAD_ARGUMENT', `an account named ${name} already exists`);
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const account: Account = {
    id: randomBytes(16).toString('hex'),
    name,
    tokenHashes: [hashToken(token)],
    quotaBytes: quota.bytes ?? 0,
    quotaObjects: quota.objects ?? 0,
    created: new Date().toISOString(),
  };
  await writeAccounts(dataDir, [...accounts, account]);
  await mkdir(join(dataDir, 'accounts', account.id, 'objects'), { recursive: true, mode: 0o700 });
  return { account, token };
}

/** Token lookups for the server; re-reads the file when it changed (accounts added while serving). */
export class AccountBook {
  private byHash = new Map<string, Account>();
  private mtimeMs = -1;

  constructor(private readonly dataDir: string) {}

  async load(): Promise<void> {
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(accountsPath(this.dataDir))).mtimeMs;
    } catch {
      mtimeMs = 0;
    }
    if (mtimeMs === this.mtimeMs) return;
    const byHash = new Map<string, Account>();
    for (const account of await readAccounts(this.dataDir)) {
      for (const hash of account.tokenHashes) byHash.set(hash, account);
    }
    this.byHash = byHash;
    this.mtimeMs = mtimeMs;
  }

  async authenticate(token: string): Promise<Account | undefined> {
    const hash = hashToken(token);
    const known = this.byHash.get(hash);
    if (known) return known;
    await this.load();
    return this.byHash.get(hash);
  }
}
