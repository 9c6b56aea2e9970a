import { fileURLToPath } from 'node:url';
import { CofferError } from '../errors.js';
import type { RemoteBackend } from './backend.js';
import { FileBackend } from './file-backend.js';

export interface OpenBackendOptions {
  s3Endpoint?: string;
  s3Region?: string;
  env?: NodeJS.ProcessEnv;
}

/** Opens the backend a remote URL names. */
export function openBackend(url: string, _options: OpenBackendOptions = {}): RemoteBackend {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CofferError('BAD_ARGUMENT', `not a remote URL: ${url} (expected file:///path)`);
  }
  switch (parsed.protocol) {
    case 'file:':
      return new FileBackend(fileURLToPath(parsed));
    default:
      throw new CofferError('BAD_ARGUMENT', `unsupported remote ${parsed.protocol}// in ${url} (supported: file://)`);
  }
}
