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

/**
 * Creates an account and its first token; the token is returned once and never stored.
 * A read-modify-write of the registry: if another admin wrote it in between, read again.
 */
export async function addAccount(
  store: ObjectStore,
  name: string,
  quota: { bytes?: number; objects?: number } = {},
): Promise<{ account: Account; token: string }> {
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
    throw new CofferError('BAD_ARGUMENT', `account name ${JSON.stringify(name)}: use 1 to 64 letters, digits, ".", "_", "@" or "-"`);
  }
  for (let attempt = 1; ; attempt++) {
    const { accounts, version } = await store.readAccounts();
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
    try {
      await store.writeAccounts([...accounts, account], version);
      return { account, token };
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'CHANGED') || attempt >= 5) throw err;
    }
  }
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
