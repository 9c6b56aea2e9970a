/**
 * Accounts of a `coffer serve` data directory, kept in `<data>/accounts.json` (mode 0600).
 * A token is 32 random bytes shown once when issued; only its SHA-256 is stored, which is
 * enough for a secret of that much entropy (no slow hash needed: nothing to brute-force).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
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

const LOCK_WAIT_MS = 10_000;
/** A lock older than this is taken to be left by a command that died (they take milliseconds). */
const LOCK_STALE_MS = 30_000;

/**
 * Runs a read-modify-write of accounts.json under `accounts.json.lock` (created with O_EXCL), so
 * two `coffer serve account` commands at once cannot lose each other's change. The server only
 * reads the file, and the rename in writeAccounts() shows it the old or the new file whole.
 */
async function withAccountsLock<T>(dataDir: string, change: (accounts: Account[]) => Promise<{ accounts?: Account[]; result: T }>): Promise<T> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const lock = `${accountsPath(dataDir)}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    try {
      const handle = await open(lock, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (await removeIfStale(lock)) continue;
      if (Date.now() > deadline) {
        throw new CofferError('EIO', `${lock} is held by another coffer serve account command; if none runs, remove it`);
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  try {
    const outcome = await change(await readAccounts(dataDir));
    if (outcome.accounts) await writeAccounts(dataDir, outcome.accounts);
    return outcome.result;
  } finally {
    await unlink(lock).catch(() => {});
  }
}

/**
 * Whether a lock was left behind: its holder's pid is gone (and the lock is not brand new), or it
 * is older than any command takes. The inode is checked again just before the unlink, so a lock
 * taken by a live command in the meantime is not removed.
 */
async function removeIfStale(lock: string): Promise<boolean> {
  try {
    const [info, text] = await Promise.all([stat(lock), readFile(lock, 'utf8')]);
    const age = Date.now() - info.mtimeMs;
    const pid = Number(text.trim());
    let holderGone = false;
    if (Number.isSafeInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 0);
      } catch (err) {
        holderGone = (err as NodeJS.ErrnoException).code === 'ESRCH';
      }
    }
    if (!((holderGone && age > 2_000) || age > LOCK_STALE_MS)) return false;
    if ((await stat(lock)).ino !== info.ino) return false;
    await unlink(lock);
    return true;
  } catch {
    return false; // gone already, or being written: try again
  }
}

function checkName(name: string): void {
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
    throw new CofferError('BAD_ARGUMENT', `account name ${JSON.stringify(name)}: use 1 to 64 letters, digits, ".", "_", "@" or "-"`);
  }
}

function find(accounts: Account[], name: string): Account {
  const account = accounts.find((a) => a.name === name);
  if (!account) {
    const known = accounts.map((a) => a.name).join(', ');
    throw new CofferError('BAD_ARGUMENT', `no account named ${JSON.stringify(name)}` + (known ? ` (there are: ${known})` : ' (there are no accounts)'));
  }
  return account;
}

const newToken = (): string => TOKEN_PREFIX + randomBytes(32).toString('base64url');

/** Creates an account and its first token; the token is returned once and never stored. */
export async function addAccount(
  dataDir: string,
  name: string,
  quota: { bytes?: number; objects?: number } = {},
): Promise<{ account: Account; token: string }> {
  checkName(name);
  checkQuota(quota);
  const created = await withAccountsLock(dataDir, async (accounts) => {
    if (accounts.some((a) => a.name === name)) throw new CofferError('BAD_ARGUMENT', `an account named ${name} already exists`);
    const token = newToken();
    const account: Account = {
      id: randomBytes(16).toString('hex'),
      name,
      tokenHashes: [hashToken(token)],
      quotaBytes: quota.bytes ?? 0,
      quotaObjects: quota.objects ?? 0,
      created: new Date().toISOString(),
    };
    return { accounts: [...accounts, account], result: { account, token } };
  });
  await mkdir(join(dataDir, 'accounts', created.account.id, 'objects'), { recursive: true, mode: 0o700 });
  return created;
}

function checkQuota(quota: { bytes?: number; objects?: number }): void {
  for (const [what, value] of [['bytes', quota.bytes], ['objects', quota.objects]] as const) {
    if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0)) {
      throw new CofferError('BAD_ARGUMENT', `quota ${what}: expected a whole number, 0 or more (0: no limit), got ${value}`);
    }
  }
}

/** Issues one more token to an account (its other tokens keep working); returned once. */
export async function issueToken(dataDir: string, name: string): Promise<{ account: Account; token: string }> {
  return withAccountsLock(dataDir, async (accounts) => {
    const token = newToken();
    const account = { ...find(accounts, name) };
    account.tokenHashes = [...account.tokenHashes, hashToken(token)];
    return { accounts: accounts.map((a) => (a.id === account.id ? account : a)), result: { account, token } };
  });
}

/** Revokes every token of an account; its objects stay, and `issueToken` lets it in again. */
export async function revokeTokens(dataDir: string, name: string): Promise<{ account: Account; revoked: number }> {
  return withAccountsLock(dataDir, async (accounts) => {
    const old = find(accounts, name);
    const account = { ...old, tokenHashes: [] };
    return { accounts: accounts.map((a) => (a.id === account.id ? account : a)), result: { account, revoked: old.tokenHashes.length } };
  });
}

/** Changes an account's quotas (0: no limit); a running server applies them within about a second. */
export async function setQuota(dataDir: string, name: string, quota: { bytes?: number; objects?: number }): Promise<Account> {
  checkQuota(quota);
  return withAccountsLock(dataDir, async (accounts) => {
    const account = { ...find(accounts, name) };
    if (quota.bytes !== undefined) account.quotaBytes = quota.bytes;
    if (quota.objects !== undefined) account.quotaObjects = quota.objects;
    return { accounts: accounts.map((a) => (a.id === account.id ? account : a)), result: account };
  });
}

/**
 * Removes an account and deletes its objects. The entry goes first: a running server stops
 * accepting its tokens before its folder disappears.
 */
export async function removeAccount(dataDir: string, name: string): Promise<Account> {
  const account = await withAccountsLock(dataDir, async (accounts) => {
    const account = find(accounts, name);
    return { accounts: accounts.filter((a) => a.id !== account.id), result: account };
  });
  if (/^[0-9a-f]{8,64}$/.test(account.id)) await rm(join(dataDir, 'accounts', account.id), { recursive: true, force: true });
  return account;
}

/**
 * Token lookups for the server. The file is checked (stat) at most once a second on any request,
 * and whenever an unknown token arrives, and re-read when it changed: accounts added, tokens
 * issued or revoked and quotas changed while the server runs take effect within about a second.
 */
export class AccountBook {
  private byHash = new Map<string, Account>();
  private version = '';
  private checkedAt = 0;
  private checking: Promise<void> | undefined;

  constructor(private readonly dataDir: string, private readonly recheckMs = 1000) {}

  async load(): Promise<void> {
    // Concurrent requests share one check rather than each stat-ing and parsing the file.
    this.checking ??= this.reload().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async reload(): Promise<void> {
    this.checkedAt = Date.now();
    let version: string;
    try {
      // The inode changes with every rewrite (write then rename), so a change within one mtime tick still shows.
      const info = await stat(accountsPath(this.dataDir));
      version = `${info.ino}:${info.mtimeMs}:${info.size}`;
    } catch {
      version = 'none';
    }
    if (version === this.version) return;
    const byHash = new Map<string, Account>();
    for (const account of await readAccounts(this.dataDir)) {
      for (const hash of account.tokenHashes) byHash.set(hash, account);
    }
    this.byHash = byHash;
    this.version = version;
  }

  /** The token's account as the file says now (give or take a second), or undefined. */
  async authenticate(token: string): Promise<Account | undefined> {
    const hash = hashToken(token);
    if (Date.now() - this.checkedAt >= this.recheckMs) await this.load();
    const known = this.byHash.get(hash);
    if (known) return known;
    await this.load();
    return this.byHash.get(hash);
  }
}
