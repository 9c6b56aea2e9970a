// What a tree holds, as golden vault fixtures record it and tests compare it: for every path
// under `dir` (relative, sorted), its kind, permission bits, contents' SHA-256 and size (files),
// target (symlinks), user xattrs, and the group of paths that are one file (hard links).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

function xattrsOf(path) {
  let out;
  try {
    out = execFileSync('getfattr', ['-h', '-d', '-e', 'hex', '-m', '^user\\.', path], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return {};
  }
  const found = {};
  for (const line of out.split('\n')) {
    const m = /^([^#=][^=]*)=(0x[0-9a-f]*)$/.exec(line.trim());
    if (m) found[m[1]] = m[2];
  }
  return found;
}

export function describeTree(dir) {
  const tree = {};
  const inodes = new Map();
  const walk = (rel) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const full = join(dir, path);
      const st = lstatSync(full);
      const entry = { mode: (st.mode & 0o7777).toString(8) };
      if (st.isDirectory()) entry.kind = 'dir';
      else if (st.isSymbolicLink()) {
        entry.kind = 'symlink';
        entry.target = readlinkSync(full);
      } else if (st.isFile()) {
        entry.kind = 'file';
        entry.size = st.size;
        entry.sha256 = createHash('sha256').update(readFileSync(full)).digest('hex');
        if (st.nlink > 1) {
          const group = inodes.get(st.ino) ?? [];
          group.push(path);
          inodes.set(st.ino, group);
        }
      } else entry.kind = 'other';
      if (!st.isSymbolicLink()) {
        const xattrs = xattrsOf(full);
        if (Object.keys(xattrs).length > 0) entry.xattrs = xattrs;
      }
      if (st.isFile() && !st.isSymbolicLink()) entry.mtimeMs = Math.floor(st.mtimeMs);
      tree[path] = entry;
      if (st.isDirectory()) walk(path);
    }
  };
  walk('');
  for (const group of inodes.values()) for (const path of group) tree[path].links = group;
  return tree;
}
