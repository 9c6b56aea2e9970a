/**
 * The index schema, version 2 (specified in docs/FORMAT.md, "Index"): version 1's tables, every
 * inode with a node id that is the same on every device, and what this device knows of the
 * vault's versions (SCHEMA_V2_ADDITIONS). UPGRADE_V1 turns a version-1 index into version 2.
 */
export const INDEX_SCHEMA_VERSION = 2;

export const ROOT_INO = 1;

/** Version 1's tables, with the node id column version 2 adds to inodes. */
export const SCHEMA_BASE = `
CREATE TABLE vault_state (
  key   TEXT PRIMARY KEY,
  value ANY
) STRICT;

CREATE TABLE inodes (
  ino      INTEGER PRIMARY KEY AUTOINCREMENT,
  mode     INTEGER NOT NULL,
  uid      INTEGER NOT NULL,
  gid      INTEGER NOT NULL,
  nlink    INTEGER NOT NULL,
  size     INTEGER NOT NULL DEFAULT 0,
  rdev     INTEGER NOT NULL DEFAULT 0,
  atime_ms INTEGER NOT NULL,
  mtime_ms INTEGER NOT NULL,
  ctime_ms INTEGER NOT NULL,
  target   TEXT,
  nid      BLOB
) STRICT;

CREATE TABLE entries (
  parent INTEGER NOT NULL,
  name   TEXT NOT NULL,
  ino    INTEGER NOT NULL,
  PRIMARY KEY (parent, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX entries_by_ino ON entries (ino);

CREATE TABLE xattrs (
  ino   INTEGER NOT NULL,
  name  TEXT NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY (ino, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE file_chunks (
  ino   INTEGER NOT NULL,
  idx   INTEGER NOT NULL,
  chunk BLOB NOT NULL,
  PRIMARY KEY (ino, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE chunks (
  id          BLOB PRIMARY KEY,
  plain_size  INTEGER NOT NULL,
  sealed_size INTEGER NOT NULL,
  refs        INTEGER NOT NULL,
  uploaded    INTEGER NOT NULL DEFAULT 0,
  released_ms INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX chunks_released ON chunks (released_ms) WHERE refs = 0;

CREATE TABLE upload_queue (
  id          BLOB PRIMARY KEY,
  queued_ms   INTEGER NOT NULL,
  attempts    INTEGER NOT NULL DEFAULT 0,
  next_try_ms INTEGER NOT NULL DEFAULT 0,
  last_error  TEXT
) STRICT, WITHOUT ROWID;

CREATE TABLE remote_garbage (
  id        BLOB PRIMARY KEY,
  since_ms  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
`;

/** Added to schema 2 after its first vaults were made: created where missing at open. */
export const MARKS_TABLE = `CREATE TABLE IF NOT EXISTS marks (
  device TEXT PRIMARY KEY,
  seq    INTEGER NOT NULL,
  hash   TEXT NOT NULL
) STRICT, WITHOUT ROWID;`;

/**
 * What this device knows of the vault's metadata (format 2):
 * - versions: every version of every node it has seen (its own published ones included); `head`
 *   is 1 while no known version supersedes it. `body` is the record's JSON without id/stamp/prev.
 * - superseded: stamps some version names in `prev` (or retires), even before that version arrives.
 * - nodes: per node, the merged place (names JSON, the stamp that placed it, whether a directory
 *   cycle moved it to the root for display), `live` (shown), and `reflected`: the head stamps the
 *   local tree holds, which a local change supersedes.
 * - placements: the merged names, by parent, to show a directory's children.
 * - dirty: nodes changed here and not yet published, with the stamps they supersede (`base`),
 *   a generation bumped at each change, and the last body of a node whose inode is gone.
 * - derived: conflicted copies shown here and not yet made real by a change of their own.
 * - devices: the vault's devices as their records name them (for conflicted copies' names).
 * - marks: per device, the last entry of its journal whose records the index holds (written in
 *   the transaction that applies or publishes it): what a checkpoint of this index covers.
 */
export const SCHEMA_V2_ADDITIONS = `
CREATE UNIQUE INDEX inodes_nid ON inodes (nid);

CREATE TABLE versions (
  nid   BLOB NOT NULL,
  stamp TEXT NOT NULL,
  prev  TEXT NOT NULL,
  time  INTEGER NOT NULL,
  body  TEXT NOT NULL,
  head  INTEGER NOT NULL,
  PRIMARY KEY (nid, stamp)
) STRICT, WITHOUT ROWID;
CREATE INDEX versions_heads ON versions (nid) WHERE head = 1;

CREATE TABLE superseded (
  nid   BLOB NOT NULL,
  stamp TEXT NOT NULL,
  PRIMARY KEY (nid, stamp)
) STRICT, WITHOUT ROWID;

CREATE TABLE nodes (
  nid         BLOB PRIMARY KEY,
  names       TEXT NOT NULL,
  place_stamp TEXT NOT NULL,
  displaced   INTEGER NOT NULL DEFAULT 0,
  deleted     INTEGER NOT NULL,
  live        INTEGER NOT NULL,
  is_dir      INTEGER NOT NULL,
  reflected   TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX nodes_displaced ON nodes (nid) WHERE displaced = 1;

CREATE TABLE placements (
  parent BLOB NOT NULL,
  name   TEXT NOT NULL,
  nid    BLOB NOT NULL,
  PRIMARY KEY (parent, name, nid)
) STRICT, WITHOUT ROWID;
CREATE INDEX placements_by_nid ON placements (nid);

CREATE TABLE dirty (
  nid  BLOB PRIMARY KEY,
  base TEXT NOT NULL,
  gen  INTEGER NOT NULL,
  gone TEXT
) STRICT, WITHOUT ROWID;

CREATE TABLE devices (
  id   TEXT PRIMARY KEY,
  name TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE derived (
  nid    BLOB PRIMARY KEY,
  source BLOB NOT NULL,
  stamp  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX derived_by_source ON derived (source);
${MARKS_TABLE}
`;

/** Version 1 → 2: node ids for every inode (the caller fills them in), and the new tables. */
export const UPGRADE_V1 = `
ALTER TABLE inodes ADD COLUMN nid BLOB;
${SCHEMA_V2_ADDITIONS}
`;
