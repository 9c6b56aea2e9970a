/**
 * Object keys as `coffer serve` accepts them. A key is 1 to 16 slash-separated segments of
 * `[A-Za-z0-9_-][A-Za-z0-9._-]*` (at most 255 characters each, 1,024 in all): no empty
 * segments, no leading dot (so no `.`, `..` or hidden temp names), no backslashes or control
 * characters, never absolute. The drive's keys (`chunks/ab/<hex>`, `manifests/<20 digits>`,
 * `snapshots/<hex>`, `coffer-vault.json`, under an optional vault prefix) all fit.
 */
const SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$/;
export const MAX_KEY_LENGTH = 1024;
const MAX_SEGMENTS = 16;

export function isValidKey(key: string): boolean {
  if (key.length === 0 || key.length > MAX_KEY_LENGTH) return false;
  const segments = key.split('/');
  return segments.length <= MAX_SEGMENTS && segments.every((s) => SEGMENT.test(s));
}

/**
 * A list prefix: empty, or a valid key, or a valid key followed by `/`, or any of those with a
 * partial last segment (`chunks/a`). Checked the same way as keys, since it names paths too.
 */
export function isValidPrefix(prefix: string): boolean {
  if (prefix === '') return true;
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  return isValidKey(trimmed);
}

/** Decodes the percent-encoded segments of a request path into a key, or undefined if malformed. */
export function keyFromPath(encoded: string): string | undefined {
  try {
    // Each segment is decoded on its own; an encoded "/" (%2F) or "\\" is refused, not reinterpreted.
    const segments = encoded.split('/').map((segment) => decodeURIComponent(segment));
    if (segments.some((s) => s.includes('/') || s.includes('\\'))) return undefined;
    return segments.join('/');
  } catch {
    return undefined;
  }
}
