import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  augmentPlane,
  BilinearResizer,
  linearTaps,
  normalize,
  resizeBilinear,
  toFloat,
} from "../src/data/transforms.js";
import { Generator } from "../src/rng.js";

interface ResizeCase {
  name: string;
  inH: number;
  inW: number;
  outH: number;
  outW: number;
  pixels: number[];
  rows: number[];
  values: string; // base64 little-endian float32, the stored rows of torch's output
}

const fixture: { torch: string; cases: ResizeCase[] } = JSON.parse(
  readFileSync(new URL("../../test/fixtures/resize.json", import.meta.url), "utf8"),
);

test("bilinear resize equals torch F.interpolate(bilinear, align_corners=False) on the fixture", () => {
  assert.ok(fixture.cases.length >= 6);
  for (const c of fixture.cases) {
    const input = toFloat(Uint8Array.from(c.pixels));
    const ours = resizeBilinear(input, 1, c.inH, c.inW, c.outH, c.outW);
    const bytes = Buffer.from(c.values, "base64");
    const theirs = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    assert.equal(theirs.length, c.rows.length * c.outW, c.name);
    let maxDiff = 0;
    c.rows.forEach((row, r) => {
      for (let x = 0; x < c.outW; x++) {
        maxDiff = Math.max(maxDiff, Math.abs(ours[row * c.outW + x] - theirs[r * c.outW + x]));
      }
    });
    console.log(`resize ${c.name}: max |ours - torch ${fixture.torch}| = ${maxDiff.toExponential(2)}`);
    // Same taps and weights as torch; only the last rounding of the blend may differ (1 float32 ulp below 1).
    assert.ok(maxDiff <= 1.2e-7, `${c.name}: max abs diff ${maxDiff}`);
  }
});

test("resize taps use half-pixel centres, clamped at the borders", () => {
  // 2 -> 4: src = (d + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (last pixel repeated).
  const t = linearTaps(2, 4);
  assert.deepEqual([...t.i0], [0, 0, 0, 1]);
  assert.deepEqual([...t.i1], [1, 1, 1, 1]);
  assert.deepEqual([...t.w1], [0, 0.25, 0.75, 0.25]);
  // Downsampling by 2 averages pixel pairs.
  const out = resizeBilinear(Float32Array.from([1, 3, 5, 7]), 1, 1, 4, 1, 2);
  assert.deepEqual([...out], [2, 6]);
});

test("resizer handles several planes and the identity size", () => {
  const planes = Float32Array.from({ length: 2 * 3 * 5 }, (_, i) => i / 7);
  const r = new BilinearResizer(3, 5, 6, 4);
  const both = r.resize(planes, 2);
  assert.deepEqual([...both.subarray(24)], [...r.resize(planes.slice(15), 1)]);
  assert.deepEqual([...resizeBilinear(planes, 2, 3, 5, 3, 5)], [...planes]);
  assert.throws(() => r.resize(planes, 3), {
    message: "Expected an input of 3 x 3 x 5 = 45 floats but received 30",
  });
  assert.throws(() => new BilinearResizer(3, 5, 0, 4), {
    message: "Expected the output height to be a positive integer but received 0",
  });
});

test("toFloat scales to [0, 1]; normalize applies (x - mean) / std", () => {
  const x = toFloat(Uint8Array.from([0, 51, 255]));
  assert.deepEqual([...x], [0, Math.fround(0.2), 1]);
  normalize(x, 0.5, 0.25);
  assert.deepEqual([...x], [-2, Math.fround((Math.fround(0.2) - 0.5) / 0.25), 2]);
  assert.throws(() => normalize(x, 0, 0), {
    message: "Expected a positive finite normalisation std but received 0",
  });
});

test("augmentation: padded crop shifts with zero fill, flip mirrors, same seed same result", () => {
  const h = 4;
  const w = 5;
  const src = Uint8Array.from({ length: h * w }, (_, i) => i + 1);
  const dst = new Float32Array(h * w);
  // No padding and no flip: the image itself.
  augmentPlane(src, 0, h, w, { padding: 0, flip: false }, new Generator(1), dst, 0);
  assert.deepEqual([...dst], [...toFloat(src)]);

  // Every output pixel is either 0 or the source pixel at a shift of at most `padding`, mirrored or not.
  const seen = new Set<string>();
  for (let seed = 0; seed < 600; seed++) {
    augmentPlane(src, 0, h, w, { padding: 2, flip: true }, new Generator(seed), dst, 0);
    const match = findTransform(src, dst, h, w, 2);
    assert.ok(match, `seed ${seed}: output is not a padded crop/flip of the input`);
    seen.add(match);
    const again = new Float32Array(h * w);
    augmentPlane(src, 0, h, w, { padding: 2, flip: true }, new Generator(seed), again, 0);
    assert.deepEqual(again, dst);
  }
  // 5 x 5 shifts x 2 flips are all reachable.
  assert.equal(seen.size, 50);
});

/** The (dy, dx, flip) that maps src to dst, or undefined. */
function findTransform(
  src: Uint8Array,
  dst: Float32Array,
  h: number,
  w: number,
  p: number,
): string | undefined {
  for (const flip of [false, true]) {
    for (let dy = -p; dy <= p; dy++) {
      for (let dx = -p; dx <= p; dx++) {
        let ok = true;
        for (let y = 0; y < h && ok; y++) {
          for (let x = 0; x < w && ok; x++) {
            const sy = y + dy;
            const sx = (flip ? w - 1 - x : x) + dx;
            const v = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[sy * w + sx] / 255 : 0;
            ok = dst[y * w + x] === Math.fround(v);
          }
        }
        if (ok) return `${dy},${dx},${flip}`;
      }
    }
  }
  return undefined;
}
