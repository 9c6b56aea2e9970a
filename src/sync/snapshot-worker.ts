/**
 * Runs in a worker thread so that preparing a snapshot (rewriting and vacuuming a
 * copy of the index) never blocks the thread that serves FUSE.
 * Input: the path of a backup copy. Output: the ids of chunks the copy references
 * that were not yet uploaded when it was taken (publishing waits for them).
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { LOCAL_ONLY_TABLES } from '../index/schema.js';

const copy = new Database(workerData as string);
try {
  copy.pragma('journal_mode = DELETE');
  const pending = copy
    .prepare<[], { id: Buffer }>('SELECT id FROM chunks WHERE uploaded = 0 AND refs > 0')
    .all()
    .map((r) => r.id.toString('hex'));
  copy.transaction(() => {
    for (const table of LOCAL_ONLY_TABLES) copy.exec(`DELETE FROM ${table}`);
    copy.exec('DELETE FROM chunks WHERE refs = 0');
    copy.exec('UPDATE chunks SET uploaded = 1, released_ms = NULL');
  })();
  copy.exec('VACUUM');
  parentPort!.postMessage({ pending });
} finally {
  copy.close();
}
