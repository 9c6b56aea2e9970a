/**
 * The index's consistency, as `coffer fsck` reports it: SQLite's own integrity check, entries
 * naming inodes that do not exist, link counts, orphans, chunk maps naming unknown chunks, and
 * reference counts. Read-only; each problem is one sentence.
 */
import type Database from 'better-sqlite3';
import { ROOT_INO } from './schema.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

export function checkIndex(db: Database.Database): { problems: string[]; inodes: number } {
  const problems: string[] = [];
  const integrity = db.pragma('integrity_check', { simple: true });
  if (integrity !== 'ok') problems.push(`SQLite integrity check: ${String(integrity)}`);
  const inodes = (db.prepare('SELECT count(*) AS n FROM inodes').get() as { n: number }).n;
  for (const row of db.prepare<[], { parent: number; name: string; ino: number }>('SELECT e.parent, e.name, e.ino FROM entries e LEFT JOIN inodes i ON i.ino = e.ino WHERE i.ino IS NULL').all()) {
    problems.push(`entry ${JSON.stringify(row.name)} in directory ${row.parent} names inode ${row.ino}, which does not exist`);
  }
  const linkCounts = db
    .prepare<[], { ino: number; mode: number; nlink: number; names: number; subdirs: number }>(
      `SELECT i.ino, i.mode, i.nlink,
              (SELECT count(*) FROM entries e WHERE e.ino = i.ino) AS names,
              (SELECT count(*) FROM entries e JOIN inodes c ON c.ino = e.ino WHERE e.parent = i.ino AND (c.mode & ${S_IFMT}) = ${S_IFDIR}) AS subdirs
       FROM inodes i`,
    )
    .all();
  for (const row of linkCounts) {
    const isDir = (row.mode & S_IFMT) === S_IFDIR;
    const expected = isDir ? 2 + row.subdirs : row.names;
    if (row.nlink !== expected) problems.push(`inode ${row.ino} has link count ${row.nlink}, expected ${expected}`);
    if (row.ino !== ROOT_INO && row.names === 0) problems.push(`inode ${row.ino} has no name (an orphan)`);
  }
  for (const row of db.prepare<[], { ino: number; idx: number }>('SELECT f.ino, f.idx FROM file_chunks f LEFT JOIN chunks c ON c.id = f.chunk WHERE c.id IS NULL').all()) {
    problems.push(`inode ${row.ino} chunk index ${row.idx} names a chunk the index does not know`);
  }
  for (const row of db
    .prepare<[], { id: Buffer; refs: number; actual: number }>('SELECT c.id, c.refs, (SELECT count(*) FROM file_chunks f WHERE f.chunk = c.id) AS actual FROM chunks c')
    .all()) {
    if (row.refs !== row.actual) problems.push(`chunk ${row.id.toString('hex')} counts ${row.refs} references but ${row.actual} exist`);
  }
  return { problems, inodes };
}
