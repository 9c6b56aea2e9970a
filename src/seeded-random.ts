/**
 * mulberry32: a small seeded generator, reproducible and plenty for choosing faults, offsets or
 * decisions. Returns numbers in [0, 1); `next() * 2 ** 32` is the underlying 32-bit integer.
 * The scripts (scripts/lib) use the compiled dist/seeded-random.js.
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
