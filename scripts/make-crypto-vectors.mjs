#!/usr/bin/env node
// Writes test/fixtures/crypto-v1.json: golden vectors for Coffer format version 1.
//
// Every input is fixed, so running this again must reproduce the file byte for byte. Run it
// only when a new format version is introduced (then write crypto-v<N>.json beside the old
// one); a diff in crypto-v1.json means the v1 bytes changed, which readers of existing vaults
// cannot survive.
//
// Usage: npx tsc -p tsconfig.json && node scripts/make-crypto-vectors.mjs
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = new URL('../dist/crypto/', import.meta.url);
const { loadSodium, sodium } = await import(new URL('sodium.js', dist).href);
const { xchachaSeal } = await import(new URL('aead.js', dist).href);
const { deriveVaultKeys, chunkId } = await import(new URL('keys.js', dist).href);
const { ObjectType, sealObjectWithNonce, openObject } = await import(new URL('objects.js', dist).href);
const { buildVaultHeader, serializeHeader, unlockVaultHeader } = await import(new URL('header.js', dist).href);
const { KDF_FLOOR } = await import(new URL('kdf.js', dist).href);

await loadSodium();
const s = sodium();
const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (h) => new Uint8Array(Buffer.from(h, 'hex'));

/** Fixed pseudo-random bytes named by a label, so inputs look random but never change. */
function fixed(label, length) {
  const out = Buffer.alloc(length);
  for (let block = 0, o = 0; o < length; block++, o += 64) {
    const h = s.crypto_generichash(64, `coffer-test-vector:${label}:${block}`, null);
    Buffer.from(h).copy(out, o, 0, Math.min(64, length - o));
  }
  return new Uint8Array(out);
}

// --- XChaCha20-Poly1305 ---------------------------------------------------------------
const xchacha = [
  {
    source: 'draft-irtf-cfrg-xchacha-03, appendix A.3.1',
    key: '808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f',
    nonce: '404142434445464748494a4b4c4d4e4f5051525354555657',
    ad: '50515253c0c1c2c3c4c5c6c7',
    plaintext: hex(Buffer.from("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")),
  },
  { source: 'coffer', key: hex(fixed('xchacha-key', 32)), nonce: hex(fixed('xchacha-nonce-empty', 24)), ad: '', plaintext: '' },
  { source: 'coffer', key: hex(fixed('xchacha-key', 32)), nonce: hex(fixed('xchacha-nonce-65', 24)), ad: hex(fixed('xchacha-ad', 60)), plaintext: hex(fixed('xchacha-pt', 65)) },
].map((v) => {
  const ciphertext = hex(xchachaSeal(unhex(v.key), unhex(v.nonce), unhex(v.plaintext), unhex(v.ad)));
  const reference = hex(s.crypto_aead_xchacha20poly1305_ietf_encrypt(unhex(v.plaintext), unhex(v.ad), null, unhex(v.nonce), unhex(v.key)));
  if (ciphertext !== reference) throw new Error('xchachaSeal disagrees with libsodium');
  return { ...v, ciphertext };
});

// --- Subkeys and chunk id -------------------------------------------------------------
const masterKey = fixed('master-key', 32);
const keys = deriveVaultKeys(masterKey);
const subkeys = {
  masterKey: hex(masterKey),
  context: 'coffer01',
  chunk: hex(keys.chunk),
  chunkId: hex(keys.chunkId),
  metadata: hex(keys.metadata),
  configMac: hex(keys.configMac),
};
const chunkIds = [0, 1, 128, 129, 4096].map((n) => {
  const plaintext = fixed(`chunk-id-plaintext-${n}`, n);
  return { masterKey: hex(masterKey), plaintext: hex(plaintext), id: hex(chunkId(keys, plaintext)) };
});

// --- Sealed objects -------------------------------------------------------------------
const vaultId = fixed('vault-id', 16);
function objectVector(name, type, key, plaintext, pad, nonceLabel) {
  const ctx = { vaultId, keyEpoch: 1, key };
  const objectId = type === ObjectType.DataChunk ? chunkId(keys, plaintext) : fixed(`${name}-id`, 32);
  const nonce = fixed(nonceLabel, 24);
  const sealed = sealObjectWithNonce(ctx, type, objectId, plaintext, nonce, { pad });
  if (!openObject(ctx, type, objectId, sealed).equals(Buffer.from(plaintext))) throw new Error(`${name} does not round-trip`);
  return {
    name,
    vaultId: hex(vaultId),
    keyEpoch: 1,
    keyName: type === ObjectType.DataChunk ? 'chunk' : 'metadata',
    key: hex(key),
    type,
    objectId: hex(objectId),
    nonce: hex(nonce),
    pad,
    plaintext: hex(plaintext),
    sealed: hex(sealed),
  };
}
const objects = [
  objectVector('data chunk, unpadded', ObjectType.DataChunk, keys.chunk, fixed('object-plaintext-unpadded', 1000), false, 'object-nonce-1'),
  objectVector('data chunk, padded', ObjectType.DataChunk, keys.chunk, fixed('object-plaintext-padded', 5000), true, 'object-nonce-2'),
  objectVector('data chunk, empty, padded', ObjectType.DataChunk, keys.chunk, new Uint8Array(0), true, 'object-nonce-3'),
  objectVector('snapshot part, padded', ObjectType.SnapshotPart, keys.metadata, fixed('object-plaintext-snapshot', 300), true, 'object-nonce-4'),
  objectVector('manifest, padded', ObjectType.Manifest, keys.metadata, Buffer.from('{"counter":1}', 'utf8'), true, 'object-nonce-5'),
];

// --- Vault header ---------------------------------------------------------------------
const passphrase = 'correct horse battery staple \u2013 caf\u00e9';
const headerInput = {
  passphrase,
  chunkSize: 1024 * 1024,
  kdf: { algorithm: 'argon2id13', opsLimit: KDF_FLOOR.opsLimit, memLimitBytes: KDF_FLOOR.memLimitBytes, salt: fixed('kdf-salt', 16) },
  vaultId,
  masterKey,
  wrapNonce: fixed('wrap-nonce', 24),
  created: '2025-01-01T00:00:00.000Z',
  keyEpoch: 1,
};
const header = await buildVaultHeader(headerInput);
if (hex((await unlockVaultHeader(JSON.parse(serializeHeader(header)), passphrase)).masterKey) !== hex(masterKey)) {
  throw new Error('header does not unlock');
}
const headerVector = {
  passphrase,
  chunkSize: headerInput.chunkSize,
  kdf: { ...headerInput.kdf, salt: hex(headerInput.kdf.salt) },
  vaultId: hex(vaultId),
  masterKey: hex(masterKey),
  wrapNonce: hex(headerInput.wrapNonce),
  created: headerInput.created,
  keyEpoch: headerInput.keyEpoch,
  header,
  serialized: serializeHeader(header),
};

const out = {
  description: 'Coffer format version 1 golden vectors; generated by scripts/make-crypto-vectors.mjs. Never edit: a change here means the v1 bytes changed.',
  formatVersion: 1,
  xchacha,
  subkeys,
  chunkIds,
  objects,
  header: headerVector,
};
const target = fileURLToPath(new URL('../test/fixtures/crypto-v1.json', import.meta.url));
writeFileSync(target, `${JSON.stringify(out, null, 2)}\n`);
console.log(`wrote ${target}`);
