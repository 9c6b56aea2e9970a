/** `coffer serve` (the HTTP server for http(s):// remotes) and `coffer serve account …`. */
import { readFile, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { CofferError } from '../../errors.js';
import { s3OptionsFromUrl } from '../../remote/open-backend.js';
import { addAccount, issueToken, listAccounts, removeAccount, revokeTokens, setQuota, type Account } from '../../server/accounts.js';
import { DiskObjectStore } from '../../server/disk-store.js';
import type { ObjectStore } from '../../server/object-store.js';
import { S3ObjectStore } from '../../server/s3-store.js';
import { CofferServer, SERVE_DEFAULTS, type ServeLimits } from '../../server/server.js';
import { checkSecretFile, type SecretFileKind } from '../secret-file.js';

/** Where a server keeps its data: `--data DIR` or `--s3 s3://bucket/prefix`, exactly one. */
export interface StoreArgs {
  data?: string;
  s3?: string;
  s3Endpoint?: string;
}

export function openStore(args: StoreArgs): ObjectStore {
  if ((args.data === undefined) === (args.s3 === undefined)) {
    throw new CofferError('BAD_ARGUMENT', 'give exactly one of --data DIR or --s3 s3://bucket/prefix');
  }
  if (args.data !== undefined) return new DiskObjectStore(args.data);
  // The same URL, credential, region and endpoint rules as the drive's s3:// remotes.
  return new S3ObjectStore(s3OptionsFromUrl(args.s3!, { s3Endpoint: args.s3Endpoint }));
}

/** The store flags as typed, for the commands a message suggests. */
function storeFlags(args: StoreArgs): string {
  if (args.data !== undefined) return `--data ${args.data}`;
  return `--s3 ${args.s3}` + (args.s3Endpoint !== undefined ? ` --s3-endpoint ${args.s3Endpoint}` : '');
}

/**
 * The server's data directory must exist: a mistyped --data must not start a server over a new,
 * empty folder. `coffer serve account add` creates it.
 */
async function checkDataDir(data: string): Promise<void> {
  let info;
  try {
    info = await stat(data);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new CofferError('BAD_ARGUMENT', `--data ${data}: ${(err as Error).message}`);
    throw new CofferError('BAD_ARGUMENT', `the data directory ${data} does not exist; create it with its first account: coffer serve account add NAME --data ${data}`);
  }
  if (!info.isDirectory()) {
    throw new CofferError('BAD_ARGUMENT', `--data ${data} is ${info.isFile() ? 'a file, ' : ''}not a folder: give the server's data directory (coffer serve account add NAME --data DIR creates one)`);
  }
}

export function parseListen(listen: string, flag = '--listen'): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new CofferError('BAD_ARGUMENT', `${flag} ${listen}: expected HOST:PORT, e.g. 127.0.0.1:8080`);
  return { host: (match[1] ?? match[2])!, port };
}

/** Anyone who reads the admin token file can read the metrics. */
const ADMIN_TOKEN_FILE: SecretFileKind = {
  what: 'the admin token file',
  risk: "anyone who reads it can read the server's metrics",
  owner: 'coffer serve runs as you and must own it',
  unusable: 'BAD_ARGUMENT',
};

/** The token that lets `GET /metrics` in: --admin-token-file (yours alone), else COFFER_ADMIN_TOKEN, else none. */
async function readAdminToken(file: string | undefined): Promise<string | undefined> {
  let token: string;
  let from: string;
  if (file !== undefined) {
    await checkSecretFile(file, ADMIN_TOKEN_FILE);
    token = (await readFile(file, 'utf8')).replace(/\r?\n$/, '');
    from = `the admin token file ${file}`;
  } else {
    token = process.env.COFFER_ADMIN_TOKEN ?? '';
    if (token === '') return undefined;
    from = 'COFFER_ADMIN_TOKEN';
  }
  if (token === '') throw new CofferError('BAD_ARGUMENT', `${from} is empty`);
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new CofferError('BAD_ARGUMENT', `${from}: the admin token must be printable ASCII without spaces (it is sent as Authorization: Bearer <token>)`);
  }
  return token;
}

const shownUrl = (address: AddressInfo): string => `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;

export async function serveCommand(
  args: { listen: string; metricsListen?: string; adminTokenFile?: string } & StoreArgs & ServeLimits,
): Promise<void> {
  const { host, port } = parseListen(args.listen);
  const { listen: _listen, metricsListen: metricsFlag, adminTokenFile, data, s3, s3Endpoint, ...limits } = args;
  const metricsListen = metricsFlag === undefined ? undefined : parseListen(metricsFlag, '--metrics-listen');
  for (const [flag, value] of [['--max-uploads', limits.maxConcurrentUploads], ['--rate-limit', limits.rateLimit]] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) throw new CofferError('BAD_ARGUMENT', `${flag}: expected a number above 0, got ${value}`);
  }
  // Node refuses a headers timeout longer than the request timeout: a short --request-timeout alone shortens both.
  if (limits.requestTimeoutMs !== undefined) {
    if (limits.headersTimeoutMs === undefined) limits.headersTimeoutMs = Math.min(SERVE_DEFAULTS.headersTimeoutMs, limits.requestTimeoutMs);
    else if (limits.headersTimeoutMs > limits.requestTimeoutMs) throw new CofferError('BAD_ARGUMENT', '--headers-timeout must not be longer than --request-timeout');
  } else if (limits.headersTimeoutMs !== undefined && limits.headersTimeoutMs > SERVE_DEFAULTS.requestTimeoutMs) {
    throw new CofferError('BAD_ARGUMENT', '--headers-timeout must not be longer than --request-timeout');
  }
  if (data !== undefined) await checkDataDir(data);
  const adminToken = await readAdminToken(adminTokenFile);
  const defined = Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined));
  const store = openStore({ data, s3, s3Endpoint });
  const server = new CofferServer({ store, host, port, adminToken, metricsListen, ...defined });
  const { address, metrics } = await server.listen();
  // Only a note: a registry that cannot be read just now was read a moment ago, by listen().
  if (await listAccounts(store).then((accounts) => accounts.length === 0, () => false)) {
    process.stderr.write(
      `coffer serve: ${data ?? s3} has no accounts yet; add one (this server takes it up while it runs) with: coffer serve account add NAME ${storeFlags({ data, s3, s3Endpoint })}\n`,
    );
  }
  // The handlers go in before the line is printed: whoever waits for the line may signal at once.
  const stopped = new Promise<void>((resolvePromise) => {
    const stop = () => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      void server.close().then(resolvePromise);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  process.stdout.write(`coffer serve: listening on ${shownUrl(address)}/\n` + (metrics ? `coffer serve: metrics on ${shownUrl(metrics)}/metrics\n` : ''));
  await stopped;
}

export async function serveAccountAddCommand(args: { name: string; quotaBytes?: number; quotaObjects?: number; json: boolean } & StoreArgs): Promise<void> {
  const { account, token } = await addAccount(openStore(args), args.name, { bytes: args.quotaBytes, objects: args.quotaObjects });
  if (args.json) {
    process.stdout.write(
      JSON.stringify({ id: account.id, name: account.name, quotaBytes: account.quotaBytes, quotaObjects: account.quotaObjects, token }) + '\n',
    );
    return;
  }
  process.stdout.write(
    `Account ${account.name} (${account.id}) created.\n` +
      `Token (shown once; only its hash is kept): ${token}\n` +
      `Use it on the drive as COFFER_TOKEN, or as "token" in the vault's config.json.\n`,
  );
}

/** What `account list --json` shows of an account: everything but the token hashes. */
function publicView(account: Account): { id: string; name: string; quotaBytes: number; quotaObjects: number; tokens: number; created: string } {
  return {
    id: account.id,
    name: account.name,
    quotaBytes: account.quotaBytes,
    quotaObjects: account.quotaObjects,
    tokens: account.tokenHashes.length,
    created: account.created,
  };
}

const shownLimit = (n: number, unit = ''): string => (n === 0 ? 'no limit' : `${n}${unit}`);

function humanBytes(n: number): string {
  if (n === 0) return 'no limit';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1 && Number.isInteger(value / 1024)) {
    value /= 1024;
    unit += 1;
  }
  return `${value} ${units[unit]}`;
}

export async function serveAccountListCommand(args: { json: boolean } & StoreArgs): Promise<void> {
  const accounts = (await listAccounts(openStore(args))).map(publicView);
  if (args.json) {
    process.stdout.write(JSON.stringify(accounts) + '\n');
    return;
  }
  if (accounts.length === 0) {
    process.stdout.write(`No accounts in ${args.data ?? args.s3} (add one with: coffer serve account add NAME ${storeFlags(args)})\n`);
    return;
  }
  const rows = [
    ['NAME', 'ID', 'QUOTA BYTES', 'QUOTA OBJECTS', 'TOKENS', 'CREATED'],
    ...accounts.map((a) => [a.name, a.id, humanBytes(a.quotaBytes), shownLimit(a.quotaObjects), String(a.tokens), a.created]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) process.stdout.write(row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ') + '\n');
}

export async function serveAccountTokenCommand(args: { name: string; json: boolean } & StoreArgs): Promise<void> {
  const { account, token } = await issueToken(openStore(args), args.name);
  if (args.json) {
    process.stdout.write(JSON.stringify({ id: account.id, name: account.name, tokens: account.tokenHashes.length, token }) + '\n');
    return;
  }
  process.stdout.write(
    `New token for ${account.name} (shown once; only its hash is kept; the account now has ${account.tokenHashes.length}): ${token}\n`,
  );
}

export async function serveAccountRevokeCommand(args: { name: string; json: boolean } & StoreArgs): Promise<void> {
  const { account, revoked } = await revokeTokens(openStore(args), args.name);
  if (args.json) {
    process.stdout.write(JSON.stringify({ id: account.id, name: account.name, revoked }) + '\n');
    return;
  }
  process.stdout.write(
    `Revoked ${revoked} token${revoked === 1 ? '' : 's'} of ${account.name}; a running server refuses them within a second or two.\n` +
      `Its objects stay; \`coffer serve account token ${account.name}\` issues a new token.\n`,
  );
}

export async function serveAccountSetCommand(args: { name: string; quotaBytes?: number; quotaObjects?: number; json: boolean } & StoreArgs): Promise<void> {
  if (args.quotaBytes === undefined && args.quotaObjects === undefined) {
    throw new CofferError('BAD_ARGUMENT', 'nothing to change: give --quota-bytes and/or --quota-objects (0: no limit)');
  }
  const account = await setQuota(openStore(args), args.name, { bytes: args.quotaBytes, objects: args.quotaObjects });
  if (args.json) {
    process.stdout.write(JSON.stringify(publicView(account)) + '\n');
    return;
  }
  process.stdout.write(
    `${account.name}: quota ${humanBytes(account.quotaBytes)}, ${shownLimit(account.quotaObjects, ' objects')}; a running server applies it within a second or two.\n`,
  );
}

export async function serveAccountRemoveCommand(args: { name: string; deleteObjects: boolean; json: boolean } & StoreArgs): Promise<void> {
  if (!args.deleteObjects) {
    throw new CofferError(
      'BAD_ARGUMENT',
      `removing account ${args.name} deletes all its objects: add --delete-objects to confirm (or \`coffer serve account revoke ${args.name}\` to lock it out and keep them)`,
    );
  }
  const account = await removeAccount(openStore(args), args.name);
  if (args.json) {
    process.stdout.write(JSON.stringify({ id: account.id, name: account.name, removed: true }) + '\n');
    return;
  }
  process.stdout.write(`Removed account ${account.name} (${account.id}) and its objects.\n`);
}
