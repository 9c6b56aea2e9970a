import { ensureBuilt } from './drive.js';

/** Integration tests run the compiled CLI and daemon, exactly as users do. */
export default function setup(): void {
  ensureBuilt();
}
