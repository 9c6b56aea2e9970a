/**
 * Two devices and a third that joins later, on each kind of shared remote but file:// (which
 * devices.test.ts covers in depth): a real Ceph RGW (s3://) and `coffer serve` (http://). Each
 * device sees the other's files while mounted, a file edited on both keeps both edits alike on
 * both, and a device cloned afterwards shows the same tree.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cofferOk, Workspace, waitFor } from '../helpers/drive.js';
import { exportRgwCredentials, startRgw, type RgwServer } from '../helpers/rgw.js';
import { addServeAccount, startServe, type ServeProcess } from '../helpers/serve.js';
// @ts-expect-error: a plain .mjs module shared with the fixture writer
import { describeTree } from '../../scripts/lib/golden-tree.mjs';

let rgw: RgwServer | undefined;
let server: ServeProcess | undefined;
let serveDir: string | undefined;
let serveToken = '';
const workspaces: Workspace[] = [];

beforeAll(async () => {
  rgw = await startRgw();
  exportRgwCredentials(rgw);
  serveDir = mkdtempSync(join(tmpdir(), 'coffer-devices-serve-'));
  serveToken = await addServeAccount(['--data', join(serveDir, 'data')], 'family');
  server = await startServe(['--listen', '127.0.0.1:0', '--data', join(serveDir, 'data')]);
}, 720_000);

afterEach(async () => {
  while (workspaces.length > 0) await workspaces.pop()!.cleanup();
});

afterAll(async () => {
  await server?.stop();
  await rgw?.stop();
  if (serveDir) rmSync(serveDir, { recursive: true, force: true });
}, 120_000);

const remotes: [string, () => { url: string; flags: string[]; env: NodeJS.ProcessEnv }][] = [
  ['s3:// (RGW)', () => ({ url: `s3://${rgw!.bucket}/devices-${randomBytes(4).toString('hex')}`, flags: ['--s3-endpoint', rgw!.endpoint], env: {} })],
  ['coffer serve', () => ({ url: `${server!.base}/devices-${randomBytes(4).toString('hex')}/`, flags: [], env: { COFFER_TOKEN: serveToken } })],
];

describe.each(remotes)('devices on %s', (_name, remoteOf) => {
  it('see each other, keep both of two concurrent edits alike, and a third device clones the same tree', async () => {
    const { url, flags, env } = remoteOf();
    const a = new Workspace('coffer-devr-a-');
    const b = new Workspace('coffer-devr-b-');
    const c = new Workspace('coffer-devr-c-');
    workspaces.push(a, b, c);
    await cofferOk(['init', a.vault, '--remote', url, ...flags], { env });
    await cofferOk(['clone', url, b.vault, '--device-name', 'bee', ...flags], { env });
    for (const ws of [a, b]) {
      ws.editConfig({ pollIntervalMs: 500 });
      await ws.mount(ws.mnt, env);
    }
    writeFileSync(a.path('from-a.txt'), 'a');
    writeFileSync(b.path('from-b.txt'), 'b');
    await waitFor('each device to see the other', () => existsSync(a.path('from-b.txt')) && existsSync(b.path('from-a.txt')));
    await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);
    await cofferOk(['sync', b.mnt, '--wait', '--timeout', '60']);

    writeFileSync(a.path('shared.txt'), 'version of a');
    writeFileSync(b.path('shared.txt'), 'version of b');
    for (let round = 0; round < 2; round++) {
      await cofferOk(['sync', a.mnt, '--wait', '--timeout', '60']);
      await cofferOk(['sync', b.mnt, '--wait', '--timeout', '60']);
    }
    const tree = describeTree(a.mnt) as Record<string, unknown>;
    expect(describeTree(b.mnt)).toEqual(tree);
    const shared = Object.keys(tree).filter((n) => n.startsWith('shared'));
    expect(shared).toHaveLength(2);
    expect(shared.map((n) => readFileSync(a.path(n), 'utf8')).sort()).toEqual(['version of a', 'version of b']);

    await cofferOk(['clone', url, c.vault, '--device-name', 'sea', ...flags], { env });
    await c.mount(c.mnt, env);
    expect(describeTree(c.mnt)).toEqual(tree);
    const devices = JSON.parse((await cofferOk(['devices', c.vault, '--json'])).stdout) as { devices: { name: string }[] };
    expect(devices.devices.map((d) => d.name)).toEqual(expect.arrayContaining(['sea', 'bee']));
    expect(devices.devices).toHaveLength(3);
  });
});
