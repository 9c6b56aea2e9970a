/**
 * The one place that owns libsodium's initialisation. libsodium-wrappers compiles to
 * WebAssembly that must finish instantiating before any function exists on the module, so
 * start-up awaits `loadSodium()` once and every crypto call after that stays synchronous.
 */
import sodiumModule from 'libsodium-wrappers-sumo';

export type Sodium = typeof sodiumModule;

let loading: Promise<void> | undefined;
let loaded = false;

export async function loadSodium(): Promise<void> {
  if (loaded) return;
  loading ??= sodiumModule.ready.then(
    () => {
      loaded = true;
    },
    (err: unknown) => {
      // Let a later call retry instead of caching the failure forever.
      loading = undefined;
      throw err;
    },
  );
  await loading;
}

export function sodium(): Sodium {
  if (!loaded) {
    throw new Error('libsodium is not initialised: await loadSodium() before using src/crypto');
  }
  return sodiumModule;
}
