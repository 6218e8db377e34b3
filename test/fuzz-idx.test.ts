// Mutation fuzzing of the IDX reader (src/data/idx.ts) on real-format buffers: the first images of the real
// Fashion-MNIST test set re-encoded (raw and gzip) and the real gzip labels file, with random byte edits,
// header dimensions set to hostile values, cuts and appended garbage. Every input must either parse to
// self-consistent dimensions or throw an Error whose message names the file; never another failure (a
// RangeError from an allocation of what a corrupt header claims, a TypeError), and never allocate more than
// the input can hold.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import fc from "fast-check";
import { gunzipSync, gzipSync } from "fflate";
import { encodeIdx, parseIdxImages, parseIdxLabels } from "../src/data/idx.js";
import { largestUint8Array } from "./helpers.js";

const DATA_DIR = "/usr/share/datasets/fashion-mnist";
const NAME = "fuzz.idx";

/** Real bytes when the dataset is installed, else a deterministic stand-in of the same format. */
function bases(): { images: Uint8Array[]; labels: Uint8Array[] } {
  let pixels: Uint8Array;
  let labels: Uint8Array;
  const realLabels = `${DATA_DIR}/t10k-labels-idx1-ubyte.gz`;
  let realLabelsGz: Uint8Array | undefined;
  if (existsSync(`${DATA_DIR}/t10k-images-idx3-ubyte.gz`) && existsSync(realLabels)) {
    const raw = gunzipSync(new Uint8Array(readFileSync(`${DATA_DIR}/t10k-images-idx3-ubyte.gz`)));
    pixels = raw.slice(16, 16 + 12 * 28 * 28);
    realLabelsGz = new Uint8Array(readFileSync(realLabels));
    labels = gunzipSync(realLabelsGz).slice(8, 8 + 12);
  } else {
    pixels = Uint8Array.from({ length: 12 * 28 * 28 }, (_, i) => (i * 37) & 0xff);
    labels = Uint8Array.from({ length: 12 }, (_, i) => i % 10);
  }
  const images = encodeIdx([12, 28, 28], pixels);
  const small = encodeIdx([3, 5, 4], pixels.subarray(0, 60));
  const lab = encodeIdx([12], labels);
  return {
    images: [images, gzipSync(images), small, gzipSync(small, { level: 1 })],
    labels: [lab, gzipSync(lab), ...(realLabelsGz ? [realLabelsGz] : [])],
  };
}

const hostileDims = [0, 1, 0xffffffff, 0x7fffffff, 0x80000000, 65536, 46341, 28];

/** null three times in four. */
const rarely = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | null> =>
  fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb });

const mutationArb = fc.record({
  base: fc.nat(),
  edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
  // Set one header dimension (raw bytes 4.. before any gzip) to a hostile value.
  dim: rarely(fc.tuple(fc.nat({ max: 2 }), fc.constantFrom(...hostileDims))),
  // A quarter of the edit sets land in the header (first 16 bytes), where they matter most.
  headerEdits: rarely(fc.constant(true)).map((b) => b === true),
  cut: rarely(fc.nat()),
  append: rarely(fc.uint8Array({ minLength: 1, maxLength: 40 })),
  gzipAfter: fc.boolean(),
});

type Mutation = typeof mutationArb extends fc.Arbitrary<infer T> ? T : never;

function mutate(base: Uint8Array, m: Mutation): Uint8Array {
  let bytes = base.slice();
  if (m.dim && !(bytes[0] === 0x1f && bytes[1] === 0x8b)) {
    const [i, v] = m.dim;
    if (8 + 4 * i <= bytes.length) new DataView(bytes.buffer).setUint32(4 + 4 * i, v);
  }
  for (const [at, v] of m.edits) {
    const span = m.headerEdits ? Math.min(16, bytes.length) : bytes.length;
    if (span > 0) bytes[at % span] = v;
  }
  if (m.cut !== null) bytes = bytes.subarray(0, m.cut % (bytes.length + 1));
  if (m.append) {
    const longer = new Uint8Array(bytes.length + m.append.length);
    longer.set(bytes);
    longer.set(m.append, bytes.length);
    bytes = longer;
  }
  // A mutated raw file, compressed: the gzip layer is valid and the IDX checks inside it get exercised.
  if (m.gzipAfter && !(bytes[0] === 0x1f && bytes[1] === 0x8b)) bytes = gzipSync(bytes, { level: 1 });
  return bytes;
}

function expectParsedOrRejected(
  parse: () => void,
  bytes: Uint8Array,
  stats: { ok: number; rejected: number },
) {
  // What the input can hold bounds the work: deflate expands at most 1032:1, a header is at most 1 KiB.
  const bound = 1032 * bytes.length + 1024;
  const largest = largestUint8Array(() => {
    try {
      parse();
      stats.ok++;
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.ok(e instanceof Error && e.constructor === Error, `unexpected ${String(e)}`);
      assert.ok(e.message.startsWith(`${NAME}: expected `), e.message);
      stats.rejected++;
    }
  });
  assert.ok(largest <= bound, `a ${bytes.length}-byte input made the reader allocate ${largest} bytes`);
}

test("mutated, truncated and extended IDX images and labels (raw and gzip) parse consistently or are rejected by name", (t) => {
  const { images, labels } = bases();
  const stats = { images: { ok: 0, rejected: 0 }, labels: { ok: 0, rejected: 0 } };
  fc.assert(
    fc.property(mutationArb, (m) => {
      const bytes = mutate(images[m.base % images.length], m);
      expectParsedOrRejected(
        () => {
          const r = parseIdxImages(bytes, NAME);
          assert.equal(r.images.length, r.count * r.rows * r.cols);
          assert.ok(r.rows > 0 && r.cols > 0);
          assert.ok(r.images.length <= 64 * bytes.length + 1024, "no more data than the input can hold");
        },
        bytes,
        stats.images,
      );
    }),
    { seed: 7001, numRuns: 4000 },
  );
  fc.assert(
    fc.property(mutationArb, fc.integer({ min: 1, max: 256 }), (m, numClasses) => {
      const bytes = mutate(labels[m.base % labels.length], m);
      expectParsedOrRejected(
        () => {
          const r = parseIdxLabels(bytes, NAME, numClasses);
          assert.equal(r.labels.length, r.count);
          for (const l of r.labels) assert.ok(l < numClasses);
        },
        bytes,
        stats.labels,
      );
    }),
    { seed: 7002, numRuns: 4000 },
  );
  for (const [kind, s] of Object.entries(stats))
    t.diagnostic(`IDX ${kind}: ${s.ok + s.rejected} cases, ${s.ok} parsed, ${s.rejected} rejected`);
  assert.ok(stats.images.ok > 0 && stats.images.rejected > 0);
  assert.ok(stats.labels.ok > 0 && stats.labels.rejected > 0);
});

test("random bytes (raw and behind a valid gzip layer) are rejected by name", (t) => {
  let cases = 0;
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), fc.boolean(), fc.boolean(), (raw, gz, images) => {
      const bytes = gz ? gzipSync(raw) : raw;
      cases++;
      const stats = { ok: 0, rejected: 0 };
      expectParsedOrRejected(
        () => (images ? parseIdxImages(bytes, NAME) : parseIdxLabels(bytes, NAME, 256)),
        bytes,
        stats,
      );
    }),
    { seed: 7003, numRuns: 2000 },
  );
  t.diagnostic(`IDX random bytes: ${cases} cases`);
});
