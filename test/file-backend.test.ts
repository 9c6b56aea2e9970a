import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileBackend } from '../src/remote/file-backend.js';
import { openBackend } from '../src/remote/open-backend.js';
import { remoteConformance } from './helpers/remote-conformance.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function fresh(): Promise<FileBackend> {
  const dir = mkdtempSync(join(tmpdir(), 'coffer-remote-'));
  dirs.push(dir);
  return new FileBackend(join(dir, 'remote'));
}

remoteConformance('file', fresh);

describe('file backend', () => {
  it('leaves no temporary files behind and refuses keys that escape its folder', async () => {
    const remote = await fresh();
    await remote.put('a/b', Buffer.from('x'));
    await expect(remote.createExclusive('a/b', Buffer.from('y'))).rejects.toThrow();
    expect(readdirSync(join(remote.root, 'a'))).toEqual(['b']);
    await expect(remote.get('../outside')).rejects.toThrow(/invalid object key/);
  });

  it('is what a file:// URL opens, and other schemes are refused clearly', () => {
    expect(openBackend('file:///tmp/x')).toBeInstanceOf(FileBackend);
    expect(() => openBackend('gopher://x')).toThrow(/unsupported remote/);
    expect(() => openBackend('not a url')).toThrow(/not a remote URL/);
  });
});
