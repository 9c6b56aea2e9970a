/** `coffer serve` (the HTTP server for http(s):// remotes) and `coffer serve account add`. */
import { CofferError } from '../../errors.js';
import { s3OptionsFromUrl } from '../../remote/open-backend.js';
import { addAccount } from '../../server/accounts.js';
import { DiskObjectStore } from '../../server/disk-store.js';
import type { ObjectStore } from '../../server/object-store.js';
import { S3ObjectStore } from '../../server/s3-store.js';
import { CofferServer, type ServeOptions } from '../../server/server.js';

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

export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new CofferError('BAD_ARGUMENT', `--listen ${listen}: expected HOST:PORT, e.g. 127.0.0.1:8080`);
  return { host: (match[1] ?? match[2])!, port };
}

export async function serveCommand(args: { listen: string } & StoreArgs & Omit<ServeOptions, 'store' | 'host' | 'port'>): Promise<void> {
  const { host, port } = parseListen(args.listen);
  const { listen: _listen, data, s3, s3Endpoint, ...limits } = args;
  const defined = Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined));
  const server = new CofferServer({ store: openStore({ data, s3, s3Endpoint }), host, port, ...defined });
  const address = await server.listen();
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  process.stdout.write(`coffer serve: listening on http://${shownHost}:${address.port}/\n`);
  await new Promise<void>((resolvePromise) => {
    const stop = () => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      void server.close().then(resolvePromise);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
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
