/**
 * The index schema, version 1 (specified in docs/FORMAT.md, "Index").
 * The whole database is what a snapshot publishes, so every table that is
 * local bookkeeping only (upload queue, garbage lists) is named in LOCAL_ONLY_TABLES
 * and emptied in the published copy.
 */
export const INDEX_SCHEMA_VERSION = 1;

export const ROOT_INO = 1;

export const LOCAL_ONLY_TABLES = ['upload_queue', 'remote_garbage'] as const;

export const SCHEMA_V1 = `
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
  target   TEXT
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
