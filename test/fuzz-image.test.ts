// Mutation fuzzing of image decoding for `vgg predict` (src/io/image.ts decodeImage): small real PNGs
// (RGBA, grey, interlaced) and JPEGs with random byte edits, cuts and appended bytes, declared sizes set to
// huge or zero values (PNG with a recomputed IHDR checksum so the size check itself is reached), plus empty
// and random inputs. Every input must decode to a consistent image with values in [0, 1] or throw an Error
// whose message names the file; never another error type, never a large allocation.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { decodeImage } from "../src/io/image.js";
import { crc32 } from "./png-crc.js";

const NAME = "fuzz.png";

function pattern(width: number, height: number): Buffer {
  const rgba = Buffer.alloc(4 * width * height);
  for (let i = 0; i < rgba.length; i++) rgba[i] = (i * 53 + (i >> 2) * 7) & 0xff;
  return rgba;
}

function png(width: number, height: number, colorType: 0 | 2 | 6, interlace = false): Uint8Array {
  const image = new PNG({ width, height, colorType, inputColorType: 6 } as ConstructorParameters<
    typeof PNG
  >[0]);
  image.data = pattern(width, height);
  const bytes = new Uint8Array(PNG.sync.write(image, { colorType, inputColorType: 6 }));
  // pngjs never writes Adam7; flipping the IHDR flag (and its CRC) sends the decoder down that path with
  // data laid out for the other one: a file that must be rejected, a good base for mutations.
  return interlace ? withIhdr(bytes, width, height, 1) : bytes;
}

/** The PNG with IHDR's width, height (and interlace flag) replaced and its CRC recomputed. */
function withIhdr(bytes: Uint8Array, width: number, height: number, interlace?: number): Uint8Array {
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  view.setUint32(16, width >>> 0);
  view.setUint32(20, height >>> 0);
  if (interlace !== undefined) out[28] = interlace;
  view.setUint32(29, crc32(out.subarray(12, 29)));
  return out;
}

function jpg(width: number, height: number, quality: number): Uint8Array {
  return new Uint8Array(jpeg.encode({ data: pattern(width, height), width, height }, quality).data);
}

/** The JPEG with the first SOF frame's declared height and width replaced. */
function withSof(bytes: Uint8Array, width: number, height: number): Uint8Array {
  const out = bytes.slice();
  for (let i = 2; i + 9 < out.length; ) {
    if (out[i] !== 0xff) break;
    const marker = out[i + 1];
    const len = (out[i + 2] << 8) | out[i + 3];
    if (marker >= 0xc0 && marker <= 0xc2) {
      const view = new DataView(out.buffer);
      view.setUint16(i + 5, height & 0xffff);
      view.setUint16(i + 7, width & 0xffff);
      return out;
    }
    i += 2 + len;
  }
  throw new Error("no SOF marker");
}

const bases = [png(7, 5, 6), png(6, 9, 0), png(4, 4, 2), png(9, 6, 6, true), jpg(8, 8, 90), jpg(17, 11, 50)];

const hugeOrZero = fc.constantFrom(0, 1, 65535, 65536, 10_000, 100_000, 0x7fffffff, 0xffffffff);

const mutationArb = fc.record({
  base: fc.nat(),
  edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
  // Edits near the start (signature, IHDR/SOF, tables) a quarter of the time.
  early: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  size: fc.oneof(
    { weight: 3, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.tuple(hugeOrZero, hugeOrZero) },
  ),
  cut: fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.nat() }),
  append: fc.oneof(
    { weight: 5, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 32 }) },
  ),
});

type Mutation = typeof mutationArb extends fc.Arbitrary<infer T> ? T : never;

function mutate(m: Mutation): Uint8Array {
  const base = bases[m.base % bases.length];
  const isPng = base[0] === 0x89;
  let bytes = m.size
    ? isPng
      ? withIhdr(base, m.size[0], m.size[1])
      : withSof(base, m.size[0], m.size[1])
    : base.slice();
  for (const [at, v] of m.edits) bytes[at % (m.early ? Math.min(64, bytes.length) : bytes.length)] = v;
  if (m.cut !== null) bytes = bytes.subarray(0, m.cut % (bytes.length + 1));
  if (m.append) {
    const longer = new Uint8Array(bytes.length + m.append.length);
    longer.set(bytes);
    longer.set(m.append, bytes.length);
    bytes = longer;
  }
  return bytes;
}

function decodesOrRejects(bytes: Uint8Array): "ok" | "rejected" {
  // Memory held by buffers after the case: what a declared size made the decoder allocate, whatever the
  // machine's speed (a buffer already collected again is missed, never counted twice).
  const before = process.memoryUsage().arrayBuffers;
  let outcome: "ok" | "rejected";
  try {
    const img = decodeImage(bytes, NAME);
    assert.ok(Number.isInteger(img.width) && img.width > 0, `width ${img.width}`);
    assert.ok(Number.isInteger(img.height) && img.height > 0, `height ${img.height}`);
    assert.equal(img.data.length, 3 * img.width * img.height);
    for (const v of img.data) assert.ok(v >= 0 && v <= 1, `pixel value ${v}`);
    outcome = "ok";
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(e instanceof Error && e.constructor === Error, `unexpected ${String(e)}`);
    assert.ok(e.message.startsWith(`${NAME}: `), e.message);
    outcome = "rejected";
  }
  const grown = process.memoryUsage().arrayBuffers - before;
  assert.ok(
    grown < 256 * 2 ** 20,
    `a ${bytes.length}-byte image left ${(grown / 2 ** 20).toFixed(0)} MiB of buffers`,
  );
  return outcome;
}

test("the unmutated bases decode, except the mislabelled interlaced PNG", () => {
  bases.forEach((b, i) => {
    assert.equal(decodesOrRejects(b), i === 3 ? "rejected" : "ok");
  });
});

test("mutated, truncated and resized PNG and JPEG bytes decode consistently or are rejected by name", (t) => {
  const counts = { ok: 0, rejected: 0 };
  fc.assert(
    fc.property(mutationArb, (m) => {
      counts[decodesOrRejects(mutate(m))]++;
    }),
    { seed: 8001, numRuns: 5000 },
  );
  t.diagnostic(
    `images: ${counts.ok + counts.rejected} cases, ${counts.ok} decoded, ${counts.rejected} rejected`,
  );
  assert.ok(counts.ok > 0 && counts.rejected > 0);
});

test("empty, signature-only and random inputs are rejected by name", (t) => {
  let cases = 0;
  const prefixes = [new Uint8Array(0), bases[0].subarray(0, 8), bases[4].subarray(0, 3)];
  fc.assert(
    fc.property(fc.nat({ max: prefixes.length - 1 }), fc.uint8Array({ maxLength: 48 }), (p, tail) => {
      const bytes = new Uint8Array(prefixes[p].length + tail.length);
      bytes.set(prefixes[p]);
      bytes.set(tail, prefixes[p].length);
      cases++;
      if (bytes.length === 0) assert.throws(() => decodeImage(bytes, NAME), /fuzz\.png: the file is empty/);
      else decodesOrRejects(bytes);
    }),
    { seed: 8002, numRuns: 1500 },
  );
  t.diagnostic(`images, random bytes: ${cases} cases`);
});

test("declared sizes of zero or above the pixel limit are refused before anything is allocated", () => {
  for (const [w, h] of [
    [0, 0],
    [0, 5],
    [0, 0xffffffff], // product 0 passed the pixel limit; pngjs then allocated 4 GB for the declared rows
    [0xffffffff, 0],
    [100_000, 100_000],
    [0xffffffff, 0xffffffff],
    [65536, 1024],
  ]) {
    const before = process.memoryUsage().rss;
    assert.throws(() => decodeImage(withIhdr(bases[0], w, h), NAME), /^Error: fuzz\.png: /);
    assert.ok(process.memoryUsage().rss - before < 64 * 2 ** 20, `PNG ${w}x${h}`);
  }
  for (const [w, h] of [
    [0, 0],
    [65535, 65535],
    [0, 8],
  ]) {
    const before = process.memoryUsage().rss;
    assert.throws(() => decodeImage(withSof(bases[4], w, h), NAME), /^Error: fuzz\.png: /);
    assert.ok(process.memoryUsage().rss - before < 64 * 2 ** 20, `JPEG ${w}x${h}`);
  }
});
