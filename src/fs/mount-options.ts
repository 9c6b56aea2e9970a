import type { MountOptions } from './fuse.js';

/**
 * The FUSE options a vault is mounted with. Shared so that the benchmark's do-nothing filesystem
 * (scripts/lib/null-fs.mjs) mounts exactly as the daemon does and measures the same stack.
 */
export function vaultMountOptions(log: MountOptions['log']): MountOptions {
  return {
    fsname: 'coffer',
    subtype: 'coffer',
    // Hard links are separate nodes to the kernel under the path-based FUSE API, so a cached
    // link count goes stale when another name of the same file changes: always ask.
    extraOptions: ['attr_timeout=0'],
    timeoutMs: 60_000,
    log,
  };
}
