import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { gzipSync } from "fflate";
import { encodeIdx, parseIdxImages, readIdxImages, readIdxLabels, readIdxPair } from "../src/data/idx.js";
import { largestUint8Array } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "vgg-idx-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, bytes: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

const pixels = Uint8Array.from({ length: 5 * 4 * 3 }, (_, i) => (i * 37) % 256);
const labels = Uint8Array.from([3, 0, 9, 1, 7]);
const imagesIdx = encodeIdx([5, 4, 3], pixels);
const labelsIdx = encodeIdx([5], labels);

/** An IDX header followed by `total - header` bytes, whatever the header claims. */
function headerOnly(magic: number, dims: number[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, magic);
  for (let i = 0; i < dims.length; i++) view.setUint32(4 + 4 * i, dims[i]);
  return out;
}

test("reads raw and gzip IDX files alike (gzip detected by content)", () => {
  for (const [suffix, encode] of [
    ["", (b: Uint8Array) => b],
    [".gz", (b: Uint8Array) => gzipSync(b)],
  ] as const) {
    const imagesPath = write(`imgs${suffix}`, encode(imagesIdx));
    const labelsPath = write(`lbls${suffix}`, encode(labelsIdx));
    const pair = readIdxPair(imagesPath, labelsPath);
    assert.deepEqual([pair.count, pair.rows, pair.cols], [5, 4, 3]);
    assert.deepEqual([...pair.images], [...pixels]);
    assert.deepEqual([...pair.labels], [...labels]);
  }
  // A gzip file without the .gz suffix is still decompressed.
  assert.equal(readIdxLabels(write("labels-no-suffix", gzipSync(labelsIdx))).count, 5);
});

test("rejects a truncated file, naming the file, the expected and the found length", () => {
  // The header claims the real training set; the data stops after 1000 bytes (gzip and raw).
  const claim = headerOnly(2051, [60000, 28, 28], 1000);
  const expected =
    "train-images-idx3-ubyte.gz: expected 47040016 bytes for 60000 images of 28x28 but found 1000; " +
    "the file is truncated or corrupt, delete it and download it again";
  assert.throws(() => readIdxImages(write("train-images-idx3-ubyte.gz", gzipSync(claim))), {
    message: expected,
  });
  assert.throws(() => readIdxImages(write("train-images-idx3-ubyte.gz", claim)), { message: expected });
  assert.throws(() => readIdxImages(write("short-raw", imagesIdx.subarray(0, 50))), {
    message:
      "short-raw: expected 76 bytes for 5 images of 4x3 but found 50; " +
      "the file is truncated or corrupt, delete it and download it again",
  });
});

test("a header claiming far more than the file holds is never allocated", () => {
  // 2,000,000 images of 28x28 would be 1.5 GB; the reader must fail after reading the real 64 bytes.
  const file = write("huge.gz", gzipSync(headerOnly(2051, [2_000_000, 28, 28], 64)));
  const largest = largestUint8Array(() =>
    assert.throws(() => readIdxImages(file), {
      message: /^huge\.gz: expected 1568000016 bytes for 2000000 images of 28x28 but found 64;/,
    }),
  );
  assert.ok(largest <= 1024, `the reader allocated ${largest} bytes for a claim it could not hold`);
  // Beyond 2 GiB the claim itself is rejected.
  assert.throws(() => readIdxImages(write("absurd", headerOnly(2051, [4_000_000_000, 28, 28], 64))), {
    message:
      "absurd: expected at most 2147483647 bytes of data but the header claims 3136000000000 " +
      "(4000000000 images of 28x28); the file is corrupt",
  });
});

test("output beyond the header's claim is not stored (trailing data, gzip bombs)", () => {
  const bomb = new Uint8Array(8 + 10 + 4_000_000); // header for 10 labels, then 4 MB of zeros
  new DataView(bomb.buffer).setUint32(0, 2049);
  new DataView(bomb.buffer).setUint32(4, 10);
  assert.throws(() => readIdxLabels(write("bomb.gz", gzipSync(bomb))), {
    message:
      "bomb.gz: expected 18 bytes for 10 labels but found more (trailing data after byte 18); " +
      "the file is truncated or corrupt, delete it and download it again",
  });
  const padded = new Uint8Array(imagesIdx.length + 4);
  padded.set(imagesIdx);
  assert.throws(() => readIdxImages(write("padded", padded)), {
    message: /^padded: expected 76 bytes for 5 images of 4x3 but found 80;/,
  });
});

test("rejects a cut or corrupt gzip stream", () => {
  const gz = gzipSync(imagesIdx);
  assert.throws(() => readIdxImages(write("cut.gz", gz.subarray(0, gz.length - 20))), {
    message: /^cut\.gz: expected 76 bytes for 5 images of 4x3 but found \d+; the file is truncated/,
  });
  const corrupt = gz.slice();
  corrupt[10] = 0xff; // first deflate block header: type 3, which does not exist
  assert.throws(() => readIdxImages(write("corrupt.gz", corrupt)), {
    message:
      "corrupt.gz: expected valid gzip data but decompression failed (invalid block type) after 0 bytes; " +
      "the file is truncated or corrupt, delete it and download it again",
  });
});

test("rejects wrong magic numbers with a hint", () => {
  assert.throws(() => readIdxImages(write("swapped", labelsIdx)), {
    message:
      "swapped: expected an IDX images file (magic 2051 = 0x00000803: unsigned bytes, 3 dimensions) but " +
      "found magic 2049 = 0x00000801 (a labels file); check that the file names are not swapped",
  });
  assert.throws(() => readIdxLabels(write("floats", headerOnly(0x0d01, [1], 12))), {
    message:
      "floats: expected an IDX labels file (magic 2049 = 0x00000801: unsigned bytes, 1 dimension) but " +
      "found magic 3329 = 0x00000d01 (data type 0x0d, 1 dimensions)",
  });
  assert.throws(() => parseIdxImages(new TextEncoder().encode("<html>not found</html>"), "page"), {
    message:
      /^page: expected an IDX images file .* but found magic 1013478509 = 0x3c68746d; this is not an IDX/,
  });
});

test("rejects a file shorter than its header", () => {
  assert.throws(() => readIdxImages(write("tiny", imagesIdx.subarray(0, 10))), {
    message:
      "tiny: expected an IDX images header of 16 bytes but found 10 bytes; the file is truncated or not an IDX file",
  });
  assert.throws(() => readIdxLabels(write("empty.gz", gzipSync(new Uint8Array(0)))), {
    message: /^empty\.gz: expected an IDX labels header of 8 bytes but found 0 bytes/,
  });
});

test("rejects labels out of range and a label count that does not match the images", () => {
  assert.throws(() => readIdxLabels(write("bad-labels", encodeIdx([3], Uint8Array.from([1, 12, 2])))), {
    message: "bad-labels: expected labels in 0..9 but found 12 at index 1; the file is corrupt",
  });
  const imagesPath = write("pair-images", imagesIdx);
  const labelsPath = write("pair-labels", encodeIdx([4], labels.subarray(0, 4)));
  assert.throws(() => readIdxPair(imagesPath, labelsPath), {
    message:
      "pair-labels: expected 5 labels to match the 5 images in pair-images but found 4; " +
      "the two files come from different sets or one is corrupt",
  });
});

test("a missing file is reported with its path", () => {
  const path = join(dir, "nope");
  assert.throws(() => readIdxImages(path), {
    message: `nope: expected a readable file at ${path} but received ENOENT`,
  });
});
