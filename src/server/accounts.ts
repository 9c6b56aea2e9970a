/**
 * Accounts of a `coffer serve` store, kept in its `accounts.json` (see object-store.ts for
 * where that lives). A token is 32 random bytes shown once when issued; only its SHA-256 is
 * stored, which is enough for a secret of that much entropy (no slow hash needed: nothing to
 * brute-force).
 */
import { createHash, randomBytes } from 'node:crypto';
import { CofferError } from '../errors.js';
import { StoreError, type ObjectStore } from './object-store.js';

export interface Account {
  /** Random hex id; the account's objects live under `accounts/<id>/objects/`. */
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

/** The accounts in an accounts.json text; `where` names it in the error for anything else. */
export function parseAccounts(text: string, where: string): Account[] {
  let parsed: AccountsFile;
  try {
    parsed = JSON.parse(text) as AccountsFile;
  } catch {
    throw new CofferError('CORRUPT_FORMAT', `${where} is not JSON`);
  }
  if (parsed?.version !== 1 || !Array.isArray(parsed.accounts)) {
    throw new CofferError('CORRUPT_FORMAT', `${where} is not a coffer serve accounts file`);
  }
  return parsed.accounts;
}

export function formatAccounts(accounts: Account[]): string {
  return JSON.stringify({ version: 1, accounts } satisfies AccountsFile, null, 2) + '\n';
}

function checkName(name: string): void {
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
    throw new CofferError('BAD_ARGUMENT', `account name ${JSON.stringify(name)}: use 1 to 64 letters, digits, ".", "_", "@" or "-"`);
  }
}

function checkQuota(quota: { bytes?: number; objects?: number }): void {
  for (const [what, value] of [['bytes', quota.bytes], ['objects', quota.objects]] as const) {
    if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0)) {
      throw new CofferError('BAD_ARGUMENT', `quota ${what}: expected a whole number, 0 or more (0: no limit), got ${value}`);
    }
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

/** How often a change is tried again when other admins keep writing the registry first. */
const UPDATE_ATTEMPTS = 50;

/**
 * A read-modify-write of the registry: `change` gets the accounts as read and answers the new
 * list (or none, to write nothing). If another admin wrote the registry in between, the store
 * says CHANGED (a compare-and-swap on its version) and the change is made again on a fresh read.
 */
export async function updateAccounts<T>(store: ObjectStore, change: (accounts: Account[]) => { accounts?: Account[]; result: T }): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const { accounts, version } = await store.readAccounts();
    const outcome = change(accounts);
    if (!outcome.accounts) return outcome.result;
    try {
      await store.writeAccounts(outcome.accounts, version);
      return outcome.result;
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'CHANGED') || attempt >= UPDATE_ATTEMPTS) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 20 * Math.min(attempt, 10)));
    }
  }
}

const replacing = (accounts: Account[], account: Account) => accounts.map((a) => (a.id === account.id ? account : a));

export async function listAccounts(store: ObjectStore): Promise<Account[]> {
  return (await store.readAccounts()).accounts;
}

/** Creates an account and its first token; the token is returned once and never stored. */
export async function addAccount(
  store: ObjectStore,
  name: string,
  quota: { bytes?: number; objects?: number } = {},
): Promise<{ account: Account; token: string }> {
  checkName(name);
  checkQuota(quota);
  return updateAccounts(store, (accounts) => {
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
}

/** Issues one more token to an account (its other tokens keep working); returned once. */
export async function issueToken(store: ObjectStore, name: string): Promise<{ account: Account; token: string }> {
  return updateAccounts(store, (accounts) => {
    const token = newToken();
    const old = find(accounts, name);
    const account = { ...old, tokenHashes: [...old.tokenHashes, hashToken(token)] };
    return { accounts: replacing(accounts, account), result: { account, token } };
  });
}

/** Revokes every token of an account; its objects stay, and `issueToken` lets it in again. */
export async function revokeTokens(store: ObjectStore, name: string): Promise<{ account: Account; revoked: number }> {
  return updateAccounts(store, (accounts) => {
    const old = find(accounts, name);
    const account = { ...old, tokenHashes: [] };
    return { accounts: replacing(accounts, account), result: { account, revoked: old.tokenHashes.length } };
  });
}

/** Changes an account's quotas (0: no limit); running servers apply them when they next read the registry. */
export async function setQuota(store: ObjectStore, name: string, quota: { bytes?: number; objects?: number }): Promise<Account> {
  checkQuota(quota);
  return updateAccounts(store, (accounts) => {
    const account = { ...find(accounts, name) };
    if (quota.bytes !== undefined) account.quotaBytes = quota.bytes;
    if (quota.objects !== undefined) account.quotaObjects = quota.objects;
    return { accounts: replacing(accounts, account), result: account };
  });
}

/**
 * Removes an account and deletes its objects. The entry goes first: running servers stop
 * accepting its tokens before its objects disappear.
 */
export async function removeAccount(store: ObjectStore, name: string): Promise<Account> {
  const account = await updateAccounts(store, (accounts) => {
    const account = find(accounts, name);
    return { accounts: accounts.filter((a) => a.id !== account.id), result: account };
  });
  await store.deleteAccount(account.id);
  return account;
}

/**
 * Token lookups for the server. The registry is re-read when a token arrives that this
 * process does not know, and by the server on a timer, so accounts added, changed or revoked
 * through another process or the CLI reach this one. Reads for unknown tokens happen at most
 * once per `unknownTokenReloadMs`: a token arriving sooner waits for the next one (so a new
 * account is never refused, and a stream of bad tokens is not a stream of store reads).
 */
export class AccountBook {
  private byHash = new Map<string, Account>();
  private version: string | undefined | null = null; // null: never loaded
  private lastUnknownTokenLoadAt = 0;
  private loading: Promise<void> | undefined;
  private unknownTokenLoad: Promise<void> | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly unknownTokenReloadMs = 1_000,
  ) {}

  /** Re-reads the registry if it changed; concurrent callers share one read. */
  load(): Promise<void> {
    this.loading ??= this.reload().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async reload(): Promise<void> {
    if (this.store.accountsVersion && this.version !== null && (await this.store.accountsVersion()) === this.version) return;
    const { accounts, version } = await this.store.readAccounts();
    if (version === this.version) return;
    const byHash = new Map<string, Account>();
    for (const account of accounts) {
      for (const hash of account.tokenHashes) byHash.set(hash, account);
    }
    this.byHash = byHash;
    this.version = version;
  }

  async authenticate(token: string): Promise<Account | undefined> {
    const hash = hashToken(token);
    const known = this.byHash.get(hash);
    if (known) return known;
    this.unknownTokenLoad ??= this.nextUnknownTokenSlot().then(() => {
      // Tokens arriving from here on wait for a later read: this one may start before their account was added.
      this.unknownTokenLoad = undefined;
      this.lastUnknownTokenLoadAt = Date.now();
      return this.loadAfterAnyUnderWay();
    });
    await this.unknownTokenLoad;
    return this.byHash.get(hash);
  }

  private async nextUnknownTokenSlot(): Promise<void> {
    const wait = this.lastUnknownTokenLoadAt + this.unknownTokenReloadMs - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }

  /** A read already under way may have begun before the account was added: read after it. */
  private async loadAfterAnyUnderWay(): Promise<void> {
    await this.loading?.catch(() => {});
    await this.load();
  }
}
