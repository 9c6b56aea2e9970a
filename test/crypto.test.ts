import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it, expect, beforeAll } from 'vitest';
import { AuthenticationError, FormatError, WeakKdfParamsError, WrongPassphraseError } from '../src/errors.js';
import { loadSodium, sodium } from '../src/crypto/sodium.js';
import { KEY_BYTES, NONCE_BYTES, TAG_BYTES, xchachaOpen, xchachaSeal } from '../src/crypto/aead.js';
import { DEFAULT_KDF, KDF_FLOOR, deriveKek, newKdfParams, type KdfParams } from '../src/crypto/kdf.js';
import { chunkId, chunkIdMatches, deriveVaultKeys, keyedHash } from '../src/crypto/keys.js';
import {
  OBJECT_HEADER_BYTES,
  OBJECT_OVERHEAD,
  ObjectType,
  openObject,
  sealObject,
  sealObjectWithNonce,
  sealedLength,
  type ObjectContext,
} from '../src/crypto/objects.js';
import {
  buildVaultHeader,
  createVaultHeader,
  parseHeaderJson,
  rewrapVaultHeader,
  serializeHeader,
  unlockVaultHeader,
  verifyVaultHeader,
  type VaultHeader,
} from '../src/crypto/header.js';

const MiB = 1024 * 1024;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));
const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

/** Floor-cost params: the cheapest the floor allows, never below it. */
const floorKdf = (): KdfParams => newKdfParams(KDF_FLOOR);

function expectThrows<E extends Error>(fn: () => unknown, type: new (...args: never[]) => E): E {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(type);
    return err as E;
  }
  throw new Error(`expected ${type.name} to be thrown`);
}

async function expectRejects<E extends Error>(fn: () => Promise<unknown>, type: new (...args: never[]) => E): Promise<E> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(type);
    return err as E;
  }
  throw new Error(`expected ${type.name} to be thrown`);
}

describe('sodium loader', () => {
  it('refuses use before loadSodium and is idempotent after', async () => {
    expect(() => sodium()).toThrow(/loadSodium/);
    await Promise.all([loadSodium(), loadSodium()]);
    await loadSodium();
    expect(typeof sodium().crypto_pwhash).toBe('function');
  });
});

describe('XChaCha20-Poly1305', () => {
  beforeAll(loadSodium);
  const lengths = [0, 1, 63, 64, 65, 4096, MiB];

  for (const length of lengths) {
    it(`matches libsodium in both directions for ${length} bytes`, () => {
      const s = sodium();
      for (const ad of [random(37), new Uint8Array(0)]) {
        const key = random(KEY_BYTES);
        const nonce = random(NONCE_BYTES);
        const plaintext = random(length);
        const ours = xchachaSeal(key, nonce, plaintext, ad);
        expect(ours.length).toBe(length + TAG_BYTES);
        expect(hex(s.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ours, ad, nonce, key))).toBe(hex(plaintext));
        const theirs = s.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key);
        expect(ours.equals(theirs)).toBe(true);
        expect(xchachaOpen(key, nonce, theirs, ad).equals(plaintext)).toBe(true);
      }
    });
  }

  it('rejects every kind of damage with AuthenticationError', () => {
    const key = random(32);
    const nonce = random(24);
    const ad = random(20);
    const sealed = xchachaSeal(key, nonce, random(100), ad);
    const flip = (buf: Uint8Array, i: number): Buffer => {
      const copy = Buffer.from(buf);
      copy[i]! ^= 0x01;
      return copy;
    };
    expectThrows(() => xchachaOpen(key, nonce, flip(sealed, 0), ad), AuthenticationError);
    expectThrows(() => xchachaOpen(key, nonce, flip(sealed, sealed.length - 1), ad), AuthenticationError);
    expectThrows(() => xchachaOpen(key, nonce, sealed, flip(ad, 3)), AuthenticationError);
    expectThrows(() => xchachaOpen(key, flip(nonce, 0), sealed, ad), AuthenticationError);
    expectThrows(() => xchachaOpen(key, flip(nonce, 23), sealed, ad), AuthenticationError);
    expectThrows(() => xchachaOpen(flip(key, 5), nonce, sealed, ad), AuthenticationError);
    expectThrows(() => xchachaOpen(key, nonce, sealed.subarray(0, 15), ad), AuthenticationError);
    expectThrows(() => xchachaOpen(key, nonce, sealed.subarray(1), ad), AuthenticationError);
    const err = expectThrows(() => xchachaOpen(key, nonce, new Uint8Array(0), ad, 'abcd'), AuthenticationError);
    expect(err.objectId).toBe('abcd');
  });

  it('rejects wrong key and nonce sizes as programming errors', () => {
    expect(() => xchachaSeal(random(31), random(24), random(1), random(0))).toThrow(RangeError);
    expect(() => xchachaSeal(random(32), random(12), random(1), random(0))).toThrow(RangeError);
  });
});

describe('keys', () => {
  beforeAll(loadSodium);

  it('derives four distinct subkeys deterministically', () => {
    const master = random(32);
    const a = deriveVaultKeys(master);
    const b = deriveVaultKeys(master);
    expect(a).toEqual(b);
    const all = new Set([a.chunk, a.chunkId, a.metadata, a.configMac].map(hex));
    expect(all.size).toBe(4);
    expect(all.has(hex(master))).toBe(false);
  });

  it('computes keyed chunk ids that depend on the key', () => {
    const data = random(5000);
    const k1 = deriveVaultKeys(random(32));
    const k2 = deriveVaultKeys(random(32));
    const id = chunkId(k1, data);
    expect(id.length).toBe(32);
    expect(hex(id)).toBe(hex(sodium().crypto_generichash(32, data, k1.chunkId)));
    expect(hex(id)).not.toBe(hex(chunkId(k2, data)));
    expect(hex(keyedHash(k1.chunkId, data))).toBe(hex(id));
    expect(chunkIdMatches(k1, data, id)).toBe(true);
    expect(chunkIdMatches(k2, data, id)).toBe(false);
    expect(chunkIdMatches(k1, data, id.subarray(1))).toBe(false);
  });
});

describe('sealed objects', () => {
  beforeAll(loadSodium);

  const context = (): ObjectContext => ({ vaultId: random(16), keyEpoch: 7, key: random(32) });

  it('round-trips every type, padded and not', () => {
    const ctx = context();
    for (const type of [ObjectType.DataChunk, ObjectType.SnapshotPart, ObjectType.Manifest]) {
      for (const pad of [false, true]) {
        for (const length of [0, 1, 4095, 4096, 4097, 70000]) {
          const id = random(32);
          const plaintext = random(length);
          const sealed = sealObject(ctx, type, id, plaintext, { pad });
          expect(sealed.length).toBe(sealedLength(length, { pad }));
          expect(openObject(ctx, type, id, sealed).equals(plaintext)).toBe(true);
        }
      }
    }
  });

  it('pads to the next multiple of 4096 and never leaks the exact size', () => {
    const ctx = context();
    const cases: Array<[number, number]> = [
      [0, 4096],
      [1, 4096],
      [4095, 4096],
      [4096, 8192],
      [5000, 8192],
      [MiB - 1, MiB],
      [MiB, MiB + 4096],
    ];
    for (const [length, padded] of cases) {
      const sealed = sealObject(ctx, ObjectType.DataChunk, random(32), random(length), { pad: true });
      expect(sealed.length - OBJECT_OVERHEAD).toBe(padded);
      expect(sealed[6]).toBe(1);
    }
    const full = sealObject(ctx, ObjectType.DataChunk, random(32), random(MiB));
    expect(full.length).toBe(MiB + OBJECT_OVERHEAD);
    expect(full[6]).toBe(0);
    expect(OBJECT_OVERHEAD).toBe(52);
  });

  it('lays the header out as specified', () => {
    const ctx = { vaultId: random(16), keyEpoch: 0x01020304, key: random(32) };
    const sealed = sealObject(ctx, ObjectType.Manifest, random(32), random(10), { pad: true });
    expect(sealed.subarray(0, 12).toString('hex')).toBe(`${Buffer.from('CFOB').toString('hex')}01030100` + '01020304');
  });

  it('uses a fresh nonce for every seal', () => {
    const ctx = context();
    const id = random(32);
    const plaintext = random(100);
    const a = sealObject(ctx, ObjectType.DataChunk, id, plaintext);
    const b = sealObject(ctx, ObjectType.DataChunk, id, plaintext);
    expect(a.subarray(12, 36).equals(b.subarray(12, 36))).toBe(false);
  });

  describe('tampering', () => {
    let ctx: ObjectContext;
    let id: Uint8Array;
    let sealed: Buffer;
    const idHex = (): string => hex(id);
    beforeAll(() => {
      ctx = context();
      id = random(32);
      sealed = sealObject(ctx, ObjectType.DataChunk, id, random(10000), { pad: true });
    });

    function expectAuthFailure(fn: () => unknown, expectedIdHex = idHex()): void {
      const err = expectThrows(fn, AuthenticationError);
      expect(err.code).toBe('AUTHENTICATION_FAILED');
      expect(err.objectId).toBe(expectedIdHex);
      expect(err.message).toContain(expectedIdHex);
      expect(err.message).toContain('data chunk');
    }
    const flipped = (offset: number, bit = 0): Buffer => {
      const copy = Buffer.from(sealed);
      copy[offset]! ^= 1 << bit;
      return copy;
    };

    it('detects a flipped bit in every header byte (version: unsupported)', () => {
      for (let offset = 0; offset < OBJECT_HEADER_BYTES; offset++) {
        for (const bit of [0, 7]) {
          if (offset === 4) {
            const err = expectThrows(() => openObject(ctx, ObjectType.DataChunk, id, flipped(offset, bit)), FormatError);
            expect(err.code).toBe('UNSUPPORTED_FORMAT');
          } else {
            expectAuthFailure(() => openObject(ctx, ObjectType.DataChunk, id, flipped(offset, bit)));
          }
        }
      }
    });

    it('detects a flipped bit in the nonce, ciphertext and tag', () => {
      const offsets = [12, 20, 35, 36, 37, 5000, sealed.length - 17, sealed.length - 16, sealed.length - 1];
      for (const offset of offsets) expectAuthFailure(() => openObject(ctx, ObjectType.DataChunk, id, flipped(offset, 3)));
    });

    it('binds the object to its type, id, vault, epoch and key', () => {
      const err = expectThrows(() => openObject(ctx, ObjectType.SnapshotPart, id, sealed), AuthenticationError);
      expect(err.objectId).toBe(idHex());
      const otherId = random(32);
      expectThrows(() => openObject(ctx, ObjectType.DataChunk, otherId, sealed), AuthenticationError);
      expect(() => openObject(ctx, ObjectType.DataChunk, otherId, sealed)).toThrow(hex(otherId));
      expectAuthFailure(() => openObject({ ...ctx, vaultId: random(16) }, ObjectType.DataChunk, id, sealed));
      expectAuthFailure(() => openObject({ ...ctx, keyEpoch: ctx.keyEpoch + 1 }, ObjectType.DataChunk, id, sealed));
      expectAuthFailure(() => openObject({ ...ctx, key: random(32) }, ObjectType.DataChunk, id, sealed));
    });

    it('fails authentication when the header is rewritten to match the reader', () => {
      // Relabel the type and epoch consistently: the header checks pass, the AD does not.
      const relabelled = Buffer.from(sealed);
      relabelled[5] = ObjectType.Manifest;
      const manifestErr = expectThrows(() => openObject(ctx, ObjectType.Manifest, id, relabelled), AuthenticationError);
      expect(manifestErr.message).toContain('manifest');
      const reEpoched = Buffer.from(sealed);
      reEpoched.writeUInt32BE(ctx.keyEpoch + 1, 8);
      expectAuthFailure(() => openObject({ ...ctx, keyEpoch: ctx.keyEpoch + 1 }, ObjectType.DataChunk, id, reEpoched));
      const unpadFlag = Buffer.from(sealed);
      unpadFlag[6] = 0;
      expectAuthFailure(() => openObject(ctx, ObjectType.DataChunk, id, unpadFlag));
    });

    it('rejects truncated, extended and all-zero objects', () => {
      for (const length of [0, 1, 12, 36, OBJECT_OVERHEAD - 1, OBJECT_OVERHEAD, sealed.length - 1]) {
        expectAuthFailure(() => openObject(ctx, ObjectType.DataChunk, id, sealed.subarray(0, length)));
      }
      expectAuthFailure(() => openObject(ctx, ObjectType.DataChunk, id, Buffer.concat([sealed, Buffer.from([0])])));
      expectAuthFailure(() => openObject(ctx, ObjectType.DataChunk, id, Buffer.alloc(sealed.length)));
    });

    it('reports malformed padding inside an authentic object as a format error', () => {
      const nonce = random(24);
      for (const payload of [Buffer.alloc(4096), Buffer.alloc(100, 0x80), Buffer.concat([Buffer.from([0x80]), Buffer.alloc(4096)])]) {
        const header = Buffer.from([0x43, 0x46, 0x4f, 0x42, 1, ObjectType.DataChunk, 1, 0, 0, 0, 0, ctx.keyEpoch]);
        const ad = Buffer.concat([header, ctx.vaultId, id]);
        const forged = Buffer.concat([header, nonce, xchachaSeal(ctx.key, nonce, payload, ad)]);
        const err = expectThrows(() => openObject(ctx, ObjectType.DataChunk, id, forged), FormatError);
        expect(err.code).toBe('CORRUPT_FORMAT');
      }
    });
  });
});

describe('KDF', () => {
  beforeAll(loadSodium);

  it('uses the documented defaults and floor', () => {
    expect(DEFAULT_KDF).toEqual({ opsLimit: 3, memLimitBytes: 64 * MiB });
    expect(KDF_FLOOR).toEqual({ opsLimit: 2, memLimitBytes: 64 * MiB });
    const params = newKdfParams();
    expect(params.algorithm).toBe('argon2id13');
    expect(params.salt.length).toBe(16);
    expect(params.opsLimit).toBe(3);
  });

  it('refuses parameters below the floor and unknown algorithms before deriving', async () => {
    const salt = random(16);
    const weak: KdfParams[] = [
      { algorithm: 'argon2id13', opsLimit: 1, memLimitBytes: 64 * MiB, salt },
      { algorithm: 'argon2id13', opsLimit: 2, memLimitBytes: 64 * MiB - 1024, salt },
      { algorithm: 'argon2id13', opsLimit: 0, memLimitBytes: 8 * 1024, salt },
      { algorithm: 'argon2i13' as 'argon2id13', opsLimit: 4, memLimitBytes: 128 * MiB, salt },
    ];
    for (const params of weak) await expectRejects(() => deriveKek('pass', params), WeakKdfParamsError);
    expectThrows(() => newKdfParams({ opsLimit: 1, memLimitBytes: 64 * MiB }), WeakKdfParamsError);
  });

  it('derives off the calling thread and gives the memory back when done', async () => {
    const before = process.memoryUsage().rss;
    let turns = 0;
    const ticking = setInterval(() => turns++, 5);
    const kek = await deriveKek('pass', newKdfParams({ opsLimit: 2, memLimitBytes: 256 * MiB }));
    clearInterval(ticking);
    expect(kek.length).toBe(32);
    expect(turns).toBeGreaterThan(3); // the event loop kept turning while Argon2id ran
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * MiB);
  });

  it('refuses absurd cost instead of hanging', async () => {
    const err = await expectRejects(() => deriveKek('pass', { algorithm: 'argon2id13', opsLimit: 3, memLimitBytes: 4096 * MiB, salt: random(16) }), FormatError);
    expect(err.code).toBe('UNSUPPORTED_FORMAT');
  });

  it('derives a 32-byte key that depends on passphrase and salt, with Unicode normalised', async () => {
    const params = floorKdf();
    const a = await deriveKek('caf\u00e9', params);
    expect(a.length).toBe(32);
    expect(hex(await deriveKek('cafe\u0301', params))).toBe(hex(a));
    expect(hex(await deriveKek('cafe', params))).not.toBe(hex(a));
    expect(hex(await deriveKek('caf\u00e9', { ...params, salt: random(16) }))).not.toBe(hex(a));
  });
});

describe('vault header', () => {
  beforeAll(loadSodium);
  const passphrase = 'open sesame';
  let created: { header: VaultHeader; masterKey: Uint8Array };
  beforeAll(async () => {
    created = await createVaultHeader(passphrase, { chunkSize: MiB, kdf: floorKdf() });
  });
  const roundTrip = (h: unknown): Record<string, any> => JSON.parse(JSON.stringify(h));

  it('creates a header that unlocks with the passphrase', async () => {
    const { header, masterKey } = created;
    expect(header.format).toBe('coffer-vault');
    expect(header.version).toBe(2);
    expect(header.vaultId).toMatch(/^[0-9a-f]{32}$/);
    expect(header.keyEpoch).toBe(1);
    expect(header.chunkSize).toBe(MiB);
    expect(masterKey.length).toBe(32);
    const text = serializeHeader(header);
    expect(text.endsWith('}\n')).toBe(true);
    const unlocked = await unlockVaultHeader(parseHeaderJson(text), passphrase);
    expect(hex(unlocked.masterKey)).toBe(hex(masterKey));
    expect(unlocked.header).toEqual(header);
    expect(verifyVaultHeader(parseHeaderJson(text), masterKey)).toEqual(header);
  });

  it('refuses a wrong passphrase', async () => {
    await expectRejects(() => unlockVaultHeader(roundTrip(created.header), 'open sesame!'), WrongPassphraseError);
    await expectRejects(() => unlockVaultHeader(roundTrip(created.header), ''), WrongPassphraseError);
  });

  it('refuses a KDF downgrade before deriving', async () => {
    for (const kdf of [{ opsLimit: 1 }, { memLimitBytes: 32 * MiB }, { algorithm: 'argon2i13' }, { algorithm: 'scrypt' }]) {
      const h = roundTrip(created.header);
      Object.assign(h.kdf, kdf);
      await expectRejects(() => unlockVaultHeader(h, passphrase), WeakKdfParamsError);
      expectThrows(() => verifyVaultHeader(h, created.masterKey), WeakKdfParamsError);
    }
  });

  it('fails to unwrap when KDF params, vault id or epoch are edited', async () => {
    const edits: Array<(h: Record<string, any>) => void> = [
      (h) => (h.kdf.opsLimit = 3),
      (h) => (h.kdf.memLimitBytes = 65 * MiB),
      (h) => (h.kdf.salt = Buffer.from(random(16)).toString('base64')),
      (h) => (h.vaultId = hex(random(16))),
      (h) => (h.keyEpoch = 2),
    ];
    for (const edit of edits) {
      const h = roundTrip(created.header);
      edit(h);
      await expectRejects(() => unlockVaultHeader(h, passphrase), WrongPassphraseError);
    }
  });

  it('detects edits to fields outside the wrapping through the MAC', async () => {
    const edits: Array<(h: Record<string, any>) => void> = [
      (h) => (h.chunkSize = 2 * MiB),
      (h) => (h.created = '2001-01-01T00:00:00.000Z'),
      (h) => (h.mac = Buffer.from(random(32)).toString('base64')),
    ];
    for (const edit of edits) {
      const h = roundTrip(created.header);
      edit(h);
      const err = await expectRejects(() => unlockVaultHeader(h, passphrase), FormatError);
      expect(err.code).toBe('CORRUPT_FORMAT');
      expect(err.message).toMatch(/modified/);
      expectThrows(() => verifyVaultHeader(h, created.masterKey), FormatError);
    }
  });

  it('verifyVaultHeader rejects a key from another vault', () => {
    const err = expectThrows(() => verifyVaultHeader(roundTrip(created.header), random(32)), FormatError);
    expect(err.message).toMatch(/another vault/);
  });

  it('validates the shape strictly', async () => {
    const corrupt: Array<(h: Record<string, any>) => void> = [
      (h) => delete h.created,
      (h) => (h.extra = 1),
      (h) => (h.kdf.extra = 1),
      (h) => (h.version = '1'),
      (h) => (h.vaultId = h.vaultId.toUpperCase()),
      (h) => (h.vaultId = 'abc'),
      (h) => (h.created = 'yesterday'),
      (h) => (h.chunkSize = 1000),
      (h) => (h.chunkSize = 0),
      (h) => (h.keyEpoch = 0),
      (h) => (h.keyEpoch = 1.5),
      (h) => (h.kdf.salt = 'not base64!'),
      (h) => (h.kdf.salt = Buffer.from(random(15)).toString('base64')),
      (h) => (h.wrappedKey = h.wrappedKey.slice(4)),
      (h) => (h.mac = null),
      (h) => (h.kdf = 'argon2id'),
    ];
    for (const edit of corrupt) {
      const h = roundTrip(created.header);
      edit(h);
      const err = await expectRejects(() => unlockVaultHeader(h, passphrase), FormatError);
      expect(err.code).toBe('CORRUPT_FORMAT');
    }
    for (const raw of [null, 42, 'coffer', []]) {
      const err = await expectRejects(() => unlockVaultHeader(raw, passphrase), FormatError);
      expect(err.code).toBe('CORRUPT_FORMAT');
    }
    expect(expectThrows(() => parseHeaderJson('{"format":'), FormatError).code).toBe('CORRUPT_FORMAT');
  });

  it('reports other formats and versions as unsupported', async () => {
    const unsupported: Array<(h: Record<string, any>) => void> = [
      (h) => (h.version = 3),
      (h) => (h.version = 0),
      (h) => (h.format = 'something-else'),
      (h) => delete h.format,
    ];
    for (const edit of unsupported) {
      const h = roundTrip(created.header);
      edit(h);
      expect((await expectRejects(() => unlockVaultHeader(h, passphrase), FormatError)).code).toBe('UNSUPPORTED_FORMAT');
    }
  });

  it('rewraps the same master key under a new passphrase and salt', async () => {
    const { header, masterKey } = created;
    const rewrapped = await rewrapVaultHeader(header, masterKey, 'new passphrase', floorKdf());
    expect(rewrapped.kdf.salt).not.toBe(header.kdf.salt);
    expect(rewrapped.wrappedKey).not.toBe(header.wrappedKey);
    expect({ ...rewrapped, kdf: undefined, wrappedKey: undefined, mac: undefined }).toEqual({ ...header, kdf: undefined, wrappedKey: undefined, mac: undefined });
    expect(hex((await unlockVaultHeader(roundTrip(rewrapped), 'new passphrase')).masterKey)).toBe(hex(masterKey));
    await expectRejects(() => unlockVaultHeader(roundTrip(rewrapped), passphrase), WrongPassphraseError);
    await expectRejects(() => rewrapVaultHeader(header, random(32), 'x', floorKdf()), FormatError);
  });

  it('rewraps at the default cost or the header cost, whichever is higher', async () => {
    const costly = await createVaultHeader(passphrase, { chunkSize: MiB, kdf: newKdfParams({ opsLimit: 4, memLimitBytes: 64 * MiB }) });
    expect((await rewrapVaultHeader(costly.header, costly.masterKey, 'next')).kdf.opsLimit).toBe(4);
    const cheap = await rewrapVaultHeader(created.header, created.masterKey, 'next');
    expect(cheap.kdf).toMatchObject({ opsLimit: DEFAULT_KDF.opsLimit, memLimitBytes: DEFAULT_KDF.memLimitBytes });
  });
});

interface Vectors {
  formatVersion: number;
  xchacha: Array<{ key: string; nonce: string; ad: string; plaintext: string; ciphertext: string }>;
  subkeys: { masterKey: string; chunk: string; chunkId: string; metadata: string; configMac: string };
  chunkIds: Array<{ masterKey: string; plaintext: string; id: string }>;
  objects: Array<{ name: string; vaultId: string; keyEpoch: number; key: string; type: ObjectType; objectId: string; nonce: string; pad: boolean; plaintext: string; sealed: string }>;
  header: {
    passphrase: string;
    chunkSize: number;
    kdf: { algorithm: 'argon2id13'; opsLimit: number; memLimitBytes: number; salt: string };
    vaultId: string;
    masterKey: string;
    wrapNonce: string;
    created: string;
    keyEpoch: number;
    header: VaultHeader;
    serialized: string;
  };
}

describe('format v1 golden vectors', () => {
  beforeAll(loadSodium);
  const vectors = JSON.parse(readFileSync(new URL('./fixtures/crypto-v1.json', import.meta.url), 'utf8')) as Vectors;

  it('is the v1 fixture', () => {
    expect(vectors.formatVersion).toBe(1);
  });

  it('reproduces the XChaCha20-Poly1305 vectors', () => {
    for (const v of vectors.xchacha) {
      const [key, nonce, ad, plaintext] = [v.key, v.nonce, v.ad, v.plaintext].map(unhex) as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
      expect(hex(xchachaSeal(key, nonce, plaintext, ad))).toBe(v.ciphertext);
      expect(hex(xchachaOpen(key, nonce, unhex(v.ciphertext), ad))).toBe(v.plaintext);
    }
  });

  it('reproduces subkeys and chunk ids', () => {
    const keys = deriveVaultKeys(unhex(vectors.subkeys.masterKey));
    expect({ chunk: hex(keys.chunk), chunkId: hex(keys.chunkId), metadata: hex(keys.metadata), configMac: hex(keys.configMac) }).toEqual({
      chunk: vectors.subkeys.chunk,
      chunkId: vectors.subkeys.chunkId,
      metadata: vectors.subkeys.metadata,
      configMac: vectors.subkeys.configMac,
    });
    for (const v of vectors.chunkIds) {
      expect(hex(chunkId(deriveVaultKeys(unhex(v.masterKey)), unhex(v.plaintext)))).toBe(v.id);
    }
  });

  it('opens and reproduces the sealed objects', () => {
    for (const v of vectors.objects) {
      const ctx = { vaultId: unhex(v.vaultId), keyEpoch: v.keyEpoch, key: unhex(v.key) };
      expect(hex(openObject(ctx, v.type, unhex(v.objectId), unhex(v.sealed)))).toBe(v.plaintext);
      expect(hex(sealObjectWithNonce(ctx, v.type, unhex(v.objectId), unhex(v.plaintext), unhex(v.nonce), { pad: v.pad }))).toBe(v.sealed);
    }
  });

  it('unlocks and reproduces the vault header', async () => {
    const v = vectors.header;
    const raw = parseHeaderJson(v.serialized);
    expect(raw).toEqual(v.header);
    const unlocked = await unlockVaultHeader(raw, v.passphrase);
    expect(hex(unlocked.masterKey)).toBe(v.masterKey);
    expect(hex((await unlockVaultHeader(raw, v.passphrase.normalize('NFD'))).masterKey)).toBe(v.masterKey);
    expect(verifyVaultHeader(raw, unhex(v.masterKey))).toEqual(v.header);
    const rebuilt = await buildVaultHeader({
      passphrase: v.passphrase,
      chunkSize: v.chunkSize,
      kdf: { ...v.kdf, salt: unhex(v.kdf.salt) },
      vaultId: unhex(v.vaultId),
      masterKey: unhex(v.masterKey),
      wrapNonce: unhex(v.wrapNonce),
      created: v.created,
      keyEpoch: v.keyEpoch,
      version: 1, // the v1 fixture's header; format 2 changes nothing in it but this number
    });
    expect(serializeHeader(rebuilt)).toBe(v.serialized);
  });
});
