/**
 * A mounted vault in a real file manager: scripts/file-manager-check.mjs opens a clone of a
 * vault of folders, images and documents in PCManFM under Xvfb, and checks the window by OCR,
 * by the images' thumbnails on the screenshot and by the images being read through the mount.
 * The screenshot is kept in artifacts/file-manager/ (COFFER_ARTIFACTS moves artifacts/).
 *
 * The negative runs show the checks can fail: an empty vault, and no mount at all.
 * Skipped, with the reason, where Xvfb, PCManFM, ImageMagick, tesseract or xdotool is missing
 * (.ci/run installs them).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/drive.js';

const SCRIPT = join(ROOT, 'scripts', 'file-manager-check.mjs');
const ARTIFACTS = join(process.env.COFFER_ARTIFACTS ?? join(ROOT, 'artifacts'), 'file-manager');

const hasCommand = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const needed: Record<string, string> = { Xvfb: 'xvfb', pcmanfm: 'pcmanfm', import: 'imagemagick', tesseract: 'tesseract-ocr', xdotool: 'xdotool', python3: 'python3' };
const missing = Object.entries(needed)
  .filter(([cmd]) => !hasCommand(cmd))
  .map(([cmd, pkg]) => `${cmd} (apt-get install ${pkg})`);
const skipReason = missing.length > 0 ? `skipped: missing ${missing.join(', ')}` : '';
if (skipReason) console.warn(`file-manager.test.ts: ${skipReason}`);

interface Report {
  ok: boolean;
  screenshot: string;
  checks: { name: string; ok: boolean; detail: string }[];
}

function runCheck(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function parseReport(result: { code: number | null; stdout: string; stderr: string }): Report {
  try {
    return JSON.parse(result.stdout) as Report;
  } catch {
    throw new Error(`file-manager-check.mjs printed no report (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
}

const failed = (report: Report) => report.checks.filter((c) => !c.ok).map((c) => c.name);
const scratch: string[] = [];
afterAll(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

function noLeftovers(): void {
  // The script unmounts and removes its temp dir even when it fails.
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  expect(mounts).not.toMatch(/\/coffer-fm-[^/ ]+\/CofferDrive /);
}

describe.skipIf(!!skipReason)(`a vault in PCManFM under Xvfb${skipReason ? ` (${skipReason})` : ''}`, () => {
  it('shows the folders, images (with thumbnails) and documents of a remote-only vault', { timeout: 240_000 }, async () => {
    const result = await runCheck(['--out', ARTIFACTS, '--json']);
    const report = parseReport(result);
    expect(report.checks.map((c) => c.name)).toEqual(['mounted', 'window', 'names', 'thumbnails', 'reads', 'daemon log']);
    expect(failed(report), `${result.stdout}\n${result.stderr}`).toEqual([]);
    expect(result.code).toBe(0);
    expect(report.screenshot).toBe(join(ARTIFACTS, 'file-manager.png'));
    expect(statSync(report.screenshot).size).toBeGreaterThan(10_000);
    expect(readFileSync(report.screenshot).subarray(1, 4).toString()).toBe('PNG');
    noLeftovers();
  });

  it('fails when the mounted vault is empty', { timeout: 240_000 }, async () => {
    const out = mkdtempSync(join(tmpdir(), 'coffer-fm-empty-'));
    scratch.push(out);
    const result = await runCheck(['--out', out, '--json', '--empty', '--wait', '5']);
    expect(result.code, result.stderr).toBe(1);
    const report = parseReport(result);
    expect(report.ok).toBe(false);
    expect(failed(report)).toEqual(['names', 'thumbnails', 'reads']);
    expect(result.stderr).toMatch(/FAILED: names, thumbnails, reads/);
    expect(existsSync(join(out, 'file-manager.png'))).toBe(true);
    noLeftovers();
  });

  it('fails when nothing is mounted at the folder', { timeout: 240_000 }, async () => {
    const out = mkdtempSync(join(tmpdir(), 'coffer-fm-nomount-'));
    scratch.push(out);
    const result = await runCheck(['--out', out, '--json', '--no-mount', '--wait', '5']);
    expect(result.code, result.stderr).toBe(1);
    const report = parseReport(result);
    expect(failed(report)).toEqual(['mounted', 'names', 'thumbnails', 'reads', 'daemon log']);
    noLeftovers();
  });
});
