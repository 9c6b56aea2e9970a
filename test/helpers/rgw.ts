/**
 * A real S3 server for a test file: a single-node Ceph RADOS Gateway on 127.0.0.1,
 * started by scripts/rgw.sh (which installs Ceph first on a machine without it, as CI does).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);
const script = new URL('../../scripts/rgw.sh', import.meta.url).pathname;

export interface RgwServer {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
  stop(): Promise<void>;
}

/** The CLI and the daemons it starts take credentials from the environment, as users' do: set them for this test file. */
export function exportRgwCredentials(rgw: RgwServer): void {
  process.env.AWS_ACCESS_KEY_ID = rgw.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = rgw.secretAccessKey;
  process.env.AWS_REGION = rgw.region;
}

export async function startRgw(): Promise<RgwServer> {
  await run('bash', [script, 'install'], { timeout: 600_000 });
  // Short: ceph's admin sockets live inside and unix socket paths are capped at 107 bytes.
  const dir = mkdtempSync('/tmp/coffer-rgw-');
  const { stdout } = await run('bash', [script, 'up', dir], { timeout: 120_000 });
  const vars = Object.fromEntries([...stdout.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
  return {
    endpoint: vars.COFFER_TEST_S3_ENDPOINT!,
    region: vars.COFFER_TEST_S3_REGION!,
    accessKeyId: vars.COFFER_TEST_S3_ACCESS_KEY_ID!,
    secretAccessKey: vars.COFFER_TEST_S3_SECRET_ACCESS_KEY!,
    bucket: vars.COFFER_TEST_S3_BUCKET!,
    stop: async () => {
      try {
        await run('bash', [script, 'down', dir], { timeout: 60_000 });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
