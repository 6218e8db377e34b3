// bf16 mixed precision: the rounding bit for bit (RNE, ties, NaN, infinities, overflow, denormals) on both
// backends; the bf16 GEMM against the reference (which rounds, then multiplies in float32) on random shapes
// and against the float32 GEMM with bf16-sized tolerances; bit-identical results on 1-3 threads; and the
// autocast view: convolutions (every pass, the fused conv+ReLU+pool included) and linear layers under
// setPrecision("bf16"). The native tests run on the AVX512-BF16 path where the CPU has it (a skip naming
// the missing feature otherwise) and, in a child process with VGG_BF16=emulate, on the emulation.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Backend, Conv2dGeometry } from "../src/backend/backend.js";
import { Bf16Backend, roundBf16Reference } from "../src/backend/bf16.js";
import { getPrecision, setBackend, setPrecision, withPrecision } from "../src/backend/index.js";
import { loadNativeAddon, NativeBackend } from "../src/backend/native.js";
import { ReferenceBackend } from "../src/backend/reference.js";
import * as F from "../src/ops/index.js";
import { Tensor } from "../src/tensor.js";
import { convGeometry } from "./helpers.js";

const isChild = process.env.VGG_BF16 !== undefined;
const loaded = loadNativeAddon();
// `npm install` builds the addon, so a missing addon is a failure, not a skip.
if (loaded instanceof Error) throw new Error(`bf16 tests need the addon: ${loaded.message}`);
const addon = loaded;
const native = new NativeBackend(addon);
const ref = new ReferenceBackend();
const path = addon.bf16Path();

// mulberry32: a small seeded generator so failures reproduce.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randn(n: number, rand: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * scale;
  return out;
}

function bits(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

function fromBits(values: number[]): Float32Array {
  return new Float32Array(Uint32Array.from(values).buffer);
}

// float32 bit pattern -> expected bf16 bit pattern, by PyTorch's rule (c10::BFloat16 round_to_nearest_even).
const conversionTable: [number, number, string][] = [
  [0x3f800000, 0x3f80, "1.0"],
  [0x3f807fff, 0x3f80, "just below half way: down"],
  [0x3f808000, 0x3f80, "tie, even below: down"],
  [0x3f808001, 0x3f81, "just above half way: up"],
  [0x3f818000, 0x3f82, "tie, odd below: up to even"],
  [0xbf818000, 0xbf82, "negative tie, odd below: up in magnitude"],
  [0x00000000, 0x0000, "+0"],
  [0x80000000, 0x8000, "-0"],
  [0x7f800000, 0x7f80, "+Inf"],
  [0xff800000, 0xff80, "-Inf"],
  [0x7fc00000, 0x7fc0, "quiet NaN"],
  [0x7f800001, 0x7fc0, "signalling NaN: the quiet NaN"],
  [0xffc00001, 0x7fc0, "negative NaN with payload: the quiet NaN"],
  [0x7fffffff, 0x7fc0, "NaN, all ones"],
  [0x7f7fffff, 0x7f80, "largest float32: overflows to Inf"],
  [0x7f7f7fff, 0x7f7f, "below the largest bf16's half way: largest bf16"],
  [0x7f7f8000, 0x7f80, "tie above the largest bf16 (odd): Inf"],
  [0xff7f8000, 0xff80, "negative tie above the largest bf16: -Inf"],
  [0x00000001, 0x0000, "smallest denormal: 0"],
  [0x00008000, 0x0000, "denormal tie, even below: 0"],
  [0x00008001, 0x0001, "denormal above half way: smallest bf16 denormal"],
  [0x00018000, 0x0002, "denormal tie, odd below: up"],
  [0x00010000, 0x0001, "smallest bf16 denormal: exact"],
  [0x807fffff, 0x8080, "largest negative denormal: up to the smallest normal"],
  [0x00800000, 0x0080, "smallest normal: exact"],
];

/**
 * The nearest bf16 by distance in float64 (ties to an even last bit), an independent statement of RNE;
 * past the largest bf16 the next value up is 2^128, which is how RNE overflows to infinity.
 */
function nearestBf16(x: number): number {
  const u = bits(new Float32Array([x]))[0];
  const down = (u & 0xffff0000) >>> 0;
  const up = (down + 0x10000) >>> 0;
  const value = (b: number) => ((b & 0x7fffffff) === 0x7f800000 ? Math.sign(x) * 2 ** 128 : fromBits([b])[0]);
  const dDown = Math.abs(value(down) - x);
  const dUp = Math.abs(value(up) - x);
  if (dDown < dUp) return down >>> 16;
  if (dUp < dDown) return up >>> 16;
  return (down >>> 16) % 2 === 0 ? down >>> 16 : up >>> 16;
}

for (const [name, be] of [
  ["reference", ref],
  ["native", native],
] as const) {
  test(`roundBf16 (${name}): PyTorch's rounding bit for bit on ties, NaN, Inf, overflow and denormals`, () => {
    const x = fromBits(conversionTable.map(([input]) => input));
    const y = new Float32Array(x.length);
    be.roundBf16(y, x);
    conversionTable.forEach(([input, expected, what], i) => {
      const got = bits(y)[i];
      assert.equal(got & 0xffff, 0, `${what}: the low half is cleared`);
      assert.equal(
        got >>> 16,
        expected,
        `${what}: 0x${input.toString(16)} -> 0x${(got >>> 16).toString(16)}, expected 0x${expected.toString(16)}`,
      );
    });
  });
}

test("roundBf16: random bit patterns give the nearest bf16 (ties to even), native equal to reference, in place too", () => {
  const rand = rng(11);
  // Past 2^16 elements the native rounding runs on the thread pool; an odd length and offset test the tails.
  const n = 200_003;
  const storage = new Float32Array(n + 1);
  const x = storage.subarray(1);
  const u = bits(x);
  for (let i = 0; i < n; i++) u[i] = Math.floor(rand() * 2 ** 32);
  for (let i = 0; i < n; i += 97) u[i] = (u[i] & 0xffff0000) | 0x8000; // ties
  const fromRef = new Float32Array(n);
  roundBf16Reference(fromRef, x);
  for (const threads of [1, 2, 3]) {
    native.setNumThreads(threads);
    const fromNative = new Float32Array(n);
    native.roundBf16(fromNative, x);
    assert.deepEqual(bits(fromNative), bits(fromRef), `native on ${threads} threads`);
  }
  for (let i = 0; i < n; i++) {
    const v = x[i];
    const expected = Number.isNaN(v) ? 0x7fc0 : nearestBf16(v);
    assert.equal(bits(fromRef)[i] >>> 16, expected, `element ${i}: ${v} (0x${u[i].toString(16)})`);
  }
  const inPlace = Float32Array.from(x);
  native.roundBf16(inPlace, inPlace);
  assert.deepEqual(bits(inPlace), bits(fromRef), "y may be x");
  assert.throws(
    () => native.roundBf16(new Float32Array(3), new Float32Array(4)),
    /^RangeError: Expected y of length 4/,
  );
});

/** The bound on |C - C'| for two float32 sums of the same k exact products: k ulps of the absolute sum. */
function absProducts(
  a: Float32Array,
  b: Float32Array,
  m: number,
  n: number,
  k: number,
  ta: boolean,
  tb: boolean,
) {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++)
        s += Math.abs((ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]));
      out[i * n + j] = s;
    }
  return out;
}

// Shapes: batch-1 rows, odd sizes, sizes around the 12 x 32 micro-tile and the 256-deep k blocks, odd k.
const gemmShapes: [number, number, number][] = [
  [1, 1, 1],
  [1, 37, 5],
  [3, 5, 7],
  [12, 32, 2],
  [13, 33, 3],
  [25, 65, 257],
  [7, 100, 513],
  [130, 29, 40],
  [250, 70, 31],
  [5, 1100, 9],
  // 1-4 rows against a transposed B: the matrix-vector path (a linear layer at batch 1-4).
  [1, 300, 700],
  [4, 70, 1030],
];

test(`gemmBf16 (${path}) equals the reference's definition to float32 summation order, and differs from fp32 by bf16 rounding`, () => {
  const rand = rng(3);
  native.setNumThreads(2);
  for (const [m, n, k] of gemmShapes)
    for (const ta of [false, true])
      for (const tb of [false, true])
        for (const beta of [0, 1] as const) {
          const a = randn(m * k, rand);
          const b = randn(k * n, rand);
          const c0 = randn(m * n, rand);
          const got = Float32Array.from(c0);
          const want = Float32Array.from(c0);
          const fp32 = Float32Array.from(c0);
          native.gemmBf16(got, a, b, m, n, k, ta, tb, beta);
          ref.gemmBf16(want, a, b, m, n, k, ta, tb, beta);
          ref.gemm(fp32, a, b, m, n, k, ta, tb, beta);
          const mag = absProducts(a, b, m, n, k, ta, tb);
          let worstBf16 = 0;
          for (let i = 0; i < m * n; i++) {
            const scale = mag[i] + (beta ? Math.abs(c0[i]) : 0);
            const what = `${m}x${n}x${k} ta=${ta} tb=${tb} beta=${beta} [${i}]`;
            assert.ok(
              Math.abs(got[i] - want[i]) <= 2 ** -22 * (k + 2) * scale + 1e-30,
              `${what}: ${got[i]} vs ${want[i]}`,
            );
            // Each input is within 2^-9 of its float32 value, so each product within 2^-8 (and a bit).
            assert.ok(
              Math.abs(got[i] - fp32[i]) <= 2 ** -7 * scale + 1e-30,
              `${what}: ${got[i]} vs fp32 ${fp32[i]}`,
            );
            worstBf16 = Math.max(worstBf16, Math.abs(got[i] - fp32[i]));
          }
          if (k >= 3) assert.ok(worstBf16 > 0, `${m}x${n}x${k}: the inputs were not rounded (equal to fp32)`);
        }
});

test(`gemmBf16 (${path}) gives the same bits on 1, 2 and 3 threads, by rows and by columns`, () => {
  const rand = rng(5);
  for (const [m, n, k] of [
    [300, 40, 600],
    [40, 300, 600],
    [97, 1029, 77],
  ]) {
    const a = randn(m * k, rand);
    const b = randn(k * n, rand);
    const results = [1, 2, 3].map((threads) => {
      native.setNumThreads(threads);
      const c = new Float32Array(m * n);
      native.gemmBf16(c, a, b, m, n, k, false, true, 0);
      return c;
    });
    assert.deepEqual(bits(results[1]), bits(results[0]), `${m}x${n}x${k}: 2 threads`);
    assert.deepEqual(bits(results[2]), bits(results[0]), `${m}x${n}x${k}: 3 threads`);
  }
  native.setNumThreads(2);
});

test(`gemmBf16 (${path}): Inf and NaN propagate as in float32, k = 0 writes beta * C`, () => {
  const m = 3;
  const n = 40;
  const k = 5;
  const a = new Float32Array(m * k).fill(1);
  const b = new Float32Array(k * n).fill(2);
  a[1 * k + 2] = Infinity; // row 1 meets finite values: Inf
  b[4 * n + 7] = Number.NaN; // column 7: NaN in every row
  a[2 * k + 3] = 0;
  b[3 * n + 9] = Infinity; // row 2 has a zero against column 9's Inf: NaN
  const c = new Float32Array(m * n);
  native.gemmBf16(c, a, b, m, n, k, false, false, 0);
  for (let i = 0; i < m; i++) assert.ok(Number.isNaN(c[i * n + 7]), `row ${i}, NaN column`);
  assert.equal(c[1 * n + 0], Infinity);
  assert.ok(Number.isNaN(c[2 * n + 9]), "0 x Inf");
  assert.equal(c[0 * n + 9], Infinity);
  assert.equal(c[0 * n + 0], 10);
  const kept = Float32Array.from({ length: 6 }, (_, i) => i + 1);
  native.gemmBf16(kept, new Float32Array(0), new Float32Array(0), 2, 3, 0, false, false, 1);
  assert.deepEqual(Array.from(kept), [1, 2, 3, 4, 5, 6]);
  native.gemmBf16(kept, new Float32Array(0), new Float32Array(0), 2, 3, 0, false, false, 0);
  assert.deepEqual(Array.from(kept), [0, 0, 0, 0, 0, 0]);
});

test("gemmBf16: argument errors as gemm's, from the TypeScript wrapper and the C++ guards", () => {
  assert.throws(
    () =>
      native.gemmBf16(
        new Float32Array(5),
        new Float32Array(6),
        new Float32Array(6),
        2,
        3,
        3,
        false,
        false,
        0,
      ),
    /^RangeError: Expected C of length 6 but received length 5/,
  );
  assert.throws(
    () =>
      addon.gemmBf16(new Float32Array(6), new Float32Array(6), new Float32Array(6), 2, 3, 3, false, false, 2),
    /^RangeError: Expected beta to be 0 or 1 but received 2/,
  );
  assert.throws(
    () =>
      addon.gemmBf16(
        new Float32Array(6),
        new Float64Array(6) as never,
        new Float32Array(6),
        2,
        3,
        3,
        false,
        false,
        0,
      ),
    /^TypeError: Expected A to be a Float32Array but received Float64Array/,
  );
});

/** The 2x2 stride-2 max-pool (VGG's) over the output of the convolution g. */
function vggPool(g: Conv2dGeometry) {
  return {
    n: g.n,
    c: g.cOut,
    h: g.outH,
    w: g.outW,
    kh: 2,
    kw: 2,
    strideH: 2,
    strideW: 2,
    padH: 0,
    padW: 0,
    outH: Math.floor(g.outH / 2),
    outW: Math.floor(g.outW / 2),
  };
}

function close(got: Float32Array, want: Float32Array, rel: number, what: string): void {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++)
    assert.ok(
      Math.abs(got[i] - want[i]) <= rel * scale + 1e-6,
      `${what}[${i}]: ${got[i]} vs ${want[i]} (scale ${scale})`,
    );
}

function rounded(x: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  roundBf16Reference(y, x);
  return y;
}

test(`bf16 view of the native backend (${path}): convolutions round x, w and dy to bf16 and sum in float32`, () => {
  const rand = rng(9);
  const view: Backend = new Bf16Backend(native);
  // Batch 1, odd sizes, channels not a multiple of 16, stride 2, padding 0-2, 3x3 (Winograd) and 1x1/5x5.
  for (const g of [
    convGeometry(1, 3, 9, 10, 5, 3, 1, 1),
    convGeometry(2, 17, 8, 9, 19, 3, 1, 1),
    convGeometry(3, 4, 11, 12, 6, 3, 2, 0),
    convGeometry(1, 6, 7, 8, 33, 1, 1, 0),
    convGeometry(2, 5, 10, 11, 7, 5, 1, 2),
    // Implicit-GEMM bf16 kernels on AMX (cIn * kh * kw >= 32, planes of 64 pixels or more, 16 for the weight
    // gradient): more images than weight-gradient runs, stride 2 with padding, 40 output channels (a
    // partial 32-row tile), a 1 x 2 plane (the float32 kernels).
    convGeometry(11, 35, 8, 9, 40, 3, 1, 1),
    convGeometry(3, 9, 17, 18, 21, 3, 2, 1),
    convGeometry(2, 64, 1, 2, 33, 3, 1, 1),
    // Whole 16-row tiles of output channels (the direct AMX forward), 48 = one 32-row and one 16-row block,
    // channel pairs padded to 16; input gradients with 32 and 16 input channels take it too.
    convGeometry(3, 20, 9, 10, 48, 3, 1, 1),
    convGeometry(2, 32, 8, 9, 16, 3, 1, 1),
    convGeometry(1, 16, 12, 13, 32, 3, 1, 1),
    convGeometry(10, 16, 5, 6, 16, 3, 1, 1),
  ]) {
    const what = JSON.stringify(g);
    const x = randn(g.n * g.cIn * g.h * g.w, rand);
    const w = randn(g.cOut * g.cIn * g.kh * g.kw, rand, 0.5);
    const bias = randn(g.cOut, rand);
    const dy = randn(g.n * g.cOut * g.outH * g.outW, rand);
    const y = new Float32Array(dy.length);
    const yRef = new Float32Array(dy.length);
    const yFp32 = new Float32Array(dy.length);
    view.conv2dForward(y, x, w, bias, g, true);
    ref.conv2dForward(yRef, rounded(x), rounded(w), bias, g, true);
    ref.conv2dForward(yFp32, x, w, bias, g, true);
    close(y, yRef, 2e-5, `forward ${what}`);
    close(y, yFp32, 2 ** -6, `forward vs fp32 ${what}`);
    assert.notDeepEqual(y, yFp32, `forward ${what}: not rounded`);
    const dx = new Float32Array(x.length);
    const dxRef = new Float32Array(x.length);
    view.conv2dBackwardInput(dx, dy, w, g, null);
    ref.conv2dBackwardInput(dxRef, rounded(dy), rounded(w), g, null);
    close(dx, dxRef, 2e-5, `input gradient ${what}`);
    // ReLU's backward fused (x as a ReLU output), and a forward without bias or ReLU.
    view.conv2dBackwardInput(dx, dy, w, g, x);
    ref.conv2dBackwardInput(dxRef, rounded(dy), rounded(w), g, x);
    close(dx, dxRef, 2e-5, `input gradient with ReLU mask ${what}`);
    assert.ok(
      dx.every((v, i) => x[i] > 0 || v === 0),
      `input gradient ${what}: not zeroed where x <= 0`,
    );
    view.conv2dForward(y, x, w, null, g, false);
    ref.conv2dForward(yRef, rounded(x), rounded(w), null, g, false);
    close(y, yRef, 2e-5, `forward without bias or ReLU ${what}`);
    const dw = new Float32Array(w.length);
    const db = new Float32Array(g.cOut);
    const dwRef = new Float32Array(w.length);
    const dbRef = new Float32Array(g.cOut);
    view.conv2dBackwardWeight(dw, db, dy, x, g);
    ref.conv2dBackwardWeight(dwRef, dbRef, rounded(dy), rounded(x), g);
    close(dw, dwRef, 2e-5, `weight gradient ${what}`);
    close(db, dbRef, 2e-5, `bias gradient ${what}`);
    // The inputs themselves are left as they were.
    assert.ok(
      bits(x).some((u) => (u & 0xffff) !== 0),
      "x is not rounded in place",
    );
  }
});

test(`bf16 view (${path}): a grayscale first layer's weight gradient from the pooled gradient equals pool backward then the weight gradient`, () => {
  const rand = rng(11);
  const view = new Bf16Backend(native);
  const g = convGeometry(6, 1, 21, 22, 16, 3, 1, 1);
  const x = randn(g.n * g.h * g.w, rand);
  const w = randn(g.cOut * 9, rand, 0.5);
  const pg = vggPool(g);
  const pooled = g.n * g.cOut * pg.outH * pg.outW;
  const [y, argmax] = [new Float32Array(pooled), new Int32Array(pooled)];
  assert.equal(view.conv2dReluMaxPool2dForward?.(y, argmax, x, w, randn(g.cOut, rand), g), true);
  const dy = randn(pooled, rand);
  const dconv = new Float32Array(g.n * g.cOut * g.outH * g.outW);
  view.maxPool2dBackward(dconv, dy, argmax, pg, y);
  const [dwN, dbN] = [new Float32Array(w.length), new Float32Array(g.cOut)];
  view.conv2dBackwardWeight(dwN, dbN, dconv, x, g);
  const [dw, db] = [new Float32Array(w.length), new Float32Array(g.cOut)];
  assert.equal(view.conv2dReluMaxPool2dBackwardWeight?.(dw, db, dy, argmax, y, x, g), true);
  assert.deepEqual(dw, dwN);
  assert.deepEqual(db, dbN);
  // 32 taps or more: left to the bf16 kernels' own weight gradient (false, nothing written).
  const g32 = convGeometry(2, 4, 12, 13, 8, 3, 1, 1);
  const p32 = g32.n * g32.cOut * Math.floor(g32.outH / 2) * Math.floor(g32.outW / 2);
  const dw32 = new Float32Array(g32.cOut * 36).fill(5);
  assert.equal(
    view.conv2dReluMaxPool2dBackwardWeight?.(
      dw32,
      null,
      randn(p32, rand),
      new Int32Array(p32),
      null,
      randn(g32.n * 4 * 12 * 13, rand),
      g32,
    ),
    false,
  );
  assert.ok(dw32.every((v) => v === 5));
});

test(`bf16 convolutions (${path}) give the same bits on 1, 2 and 3 threads, pooled or not`, (t) => {
  if (path !== "amx") {
    t.skip(`on the ${path} path bf16 convolutions run the float32 kernels (native-determinism tests those)`);
    return;
  }
  const rand = rng(13);
  const view = new Bf16Backend(native);
  const g = convGeometry(5, 32, 10, 11, 48, 3, 1, 1);
  const x = randn(g.n * g.cIn * g.h * g.w, rand);
  const w = randn(g.cOut * g.cIn * 9, rand, 0.3);
  const bias = randn(g.cOut, rand);
  const dy = randn(g.n * g.cOut * g.outH * g.outW, rand);
  const pooled = g.n * g.cOut * Math.floor(g.outH / 2) * Math.floor(g.outW / 2);
  const run = (threads: number) => {
    native.setNumThreads(threads);
    const y = new Float32Array(dy.length);
    const p = new Float32Array(pooled);
    const argmax = new Int32Array(pooled);
    const dx = new Float32Array(x.length);
    const dw = new Float32Array(w.length);
    const db = new Float32Array(g.cOut);
    view.conv2dForward(y, x, w, bias, g, true);
    assert.ok(view.conv2dReluMaxPool2dForward?.(p, argmax, x, w, bias, g), "the fused pass ran");
    view.conv2dBackwardInput(dx, dy, w, g, x);
    view.conv2dBackwardWeight(dw, db, dy, x, g);
    return [y, p, dx, dw, db].map((a) => Buffer.from(a.buffer).toString("hex"));
  };
  const one = run(1);
  for (const threads of [2, 3]) assert.deepEqual(run(threads), one, `${threads} threads`);
  native.setNumThreads(2);
});

test(`bf16 conv + ReLU + pool (${path}) equals pooling the forward's output, NaN and ties included`, (t) => {
  if (path !== "amx") {
    t.skip(`on the ${path} path the fused pass is the float32 kernel's (tested in native.test)`);
    return;
  }
  const rand = rng(17);
  const view = new Bf16Backend(native);
  // Rows of 34 outputs: two 16-window vectors and a scalar tail; odd height (a dropped last row).
  for (const g of [convGeometry(2, 16, 33, 34, 32, 3, 1, 1), convGeometry(1, 32, 9, 10, 16, 3, 1, 1)]) {
    const x = randn(g.n * g.cIn * g.h * g.w, rand);
    x[5 * g.w + 7] = Number.NaN; // a NaN in image 0, channel 0: NaN outputs around it
    x.fill(0, g.cIn * g.h * g.w, g.cIn * g.h * g.w + 3 * g.w); // zeros: ReLU ties at 0
    const w = randn(g.cOut * g.cIn * 9, rand, 0.3);
    const bias = randn(g.cOut, rand);
    const y = new Float32Array(g.n * g.cOut * g.outH * g.outW);
    view.conv2dForward(y, x, w, bias, g, true);
    const pooled = g.n * g.cOut * Math.floor(g.outH / 2) * Math.floor(g.outW / 2);
    const p = new Float32Array(pooled);
    const argmax = new Int32Array(pooled);
    const pRef = new Float32Array(pooled);
    const argmaxRef = new Int32Array(pooled);
    assert.ok(view.conv2dReluMaxPool2dForward?.(p, argmax, x, w, bias, g), "the fused pass ran");
    ref.maxPool2dForward(pRef, argmaxRef, y, vggPool(g));
    assert.ok(p.some(Number.isNaN), "some windows hold a NaN");
    assert.deepEqual(bits(p), bits(pRef), JSON.stringify(g));
    assert.deepEqual(argmax, argmaxRef, JSON.stringify(g));
  }
});

test("setPrecision('bf16'): a conv + ReLU + pool + linear step on both backends, float32 weights and loss, restored after withPrecision", () => {
  const rand = rng(21);
  const xData = randn(3 * 5 * 12 * 12, rand);
  const w1 = randn(7 * 5 * 9, rand, 0.3);
  const b1 = randn(7, rand, 0.1);
  const w2 = randn(10 * 7 * 6 * 6, rand, 0.1);
  const b2 = randn(10, rand, 0.1);
  const targets = Int32Array.from([1, 4, 9]);
  function step(backendName: "native" | "reference") {
    setBackend(backendName);
    const x = new Tensor(Float32Array.from(xData), [3, 5, 12, 12]);
    const params = [
      new Tensor(Float32Array.from(w1), [7, 5, 3, 3], { requiresGrad: true }),
      new Tensor(Float32Array.from(b1), [7], { requiresGrad: true }),
      new Tensor(Float32Array.from(w2), [10, 7 * 6 * 6], { requiresGrad: true }),
      new Tensor(Float32Array.from(b2), [10], { requiresGrad: true }),
    ];
    const h = F.conv2dReluMaxPool2d(x, params[0], params[1], { padding: 1 }, { kernelSize: 2 });
    const logits = F.linear(F.flatten(h), params[2], params[3]);
    const loss = F.crossEntropy(logits, targets);
    loss.backward();
    return { loss: loss.item(), grads: params.map((p) => Float32Array.from(p.grad?.data ?? [])) };
  }
  const fp32 = step("native");
  const results = withPrecision("bf16", () => {
    assert.equal(getPrecision(), "bf16");
    return { native: step("native"), reference: step("reference") };
  });
  assert.equal(getPrecision(), "fp32");
  for (const [name, r] of Object.entries(results)) {
    assert.ok(
      Math.abs(r.loss - fp32.loss) < 2e-2 * Math.abs(fp32.loss),
      `${name} loss ${r.loss} vs fp32 ${fp32.loss}`,
    );
    for (const [i, g] of r.grads.entries()) close(g, fp32.grads[i], 3e-2, `${name} gradient ${i} vs fp32`);
    // Master gradients are float32: they are not bf16 values.
    assert.ok(
      r.grads.some((g) => bits(g).some((u) => (u & 0xffff) !== 0)),
      `${name}: gradients are float32`,
    );
  }
  for (const [i, g] of results.native.grads.entries())
    close(g, results.reference.grads[i], 1e-4, `native vs reference gradient ${i}`);
  assert.ok(Math.abs(results.native.loss - results.reference.loss) < 1e-5, "native vs reference loss");
  assert.throws(
    () =>
      withPrecision("bf16", () => {
        throw new Error("inside");
      }),
    /inside/,
  );
  assert.equal(getPrecision(), "fp32", "restored after a throw");
  assert.throws(
    () => setPrecision("fp16" as never),
    /^RangeError: Expected the precision to be "fp32" or "bf16" but received "fp16"/,
  );
  setBackend("native");
});

/** A fixed product's bits as hex, in this process (the path given by VGG_BF16). */
function productHex(): string {
  const rand = rng(77);
  const [m, n, k] = [77, 301, 1033];
  const a = randn(m * k, rand);
  const b = randn(k * n, rand);
  const c = new Float32Array(m * n);
  native.gemmBf16(c, a, b, m, n, k, false, true, 0);
  return Buffer.from(c.buffer).toString("hex");
}

if (process.env.VGG_BF16_PRINT_PRODUCT === "1") process.stdout.write(`${path} ${productHex()}\n`);

/** The environment for a child on the bf16 path `mode` (the path is fixed when the addon loads). */
function childEnv(mode: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // Without NODE_TEST_CONTEXT the child reports in plain TAP instead of the parent runner's protocol.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  return { ...env, VGG_BF16: mode, ...extra };
}

/** The fixed product computed in a child on the bf16 path `mode`: the path it took and the bits. */
function childProduct(mode: string): { path: string; hex: string } {
  const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
    env: childEnv(mode, { VGG_BF16_PRINT_PRODUCT: "1" }),
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(child.status, 0, child.stderr);
  const [childPath, hex] = child.stdout.trim().split("\n")[0].split(" ");
  return { path: childPath, hex };
}

/** This file's suite in a child on the bf16 path `mode`; asserts it passed on that path. */
function childSuite(mode: string, pathName: string): void {
  const result = spawnSync(process.execPath, ["--test-reporter=tap", fileURLToPath(import.meta.url)], {
    env: childEnv(mode),
    encoding: "utf8",
    timeout: 300_000,
  });
  assert.equal(result.signal, null, `the ${mode} child died of ${result.signal}:\n${result.stderr}`);
  assert.equal(result.status, 0, `the ${mode} run failed:\n${result.stdout}\n${result.stderr}`);
  assert.match(result.stdout, new RegExp(`ok \\d+ - gemmBf16 \\(${pathName}\\) equals the reference`));
  assert.match(result.stdout, /# fail 0/);
}

if (!isChild && process.env.VGG_BF16_PRINT_PRODUCT !== "1") {
  test("the AVX512-BF16 path is in use where the CPU has it, and gives the emulation's bits", (t) => {
    if (path !== "avx512bf16" && path !== "amx") {
      t.skip("this CPU (or OS) lacks AVX512_BF16 (VDPBF16PS): only the emulation is tested");
      return;
    }
    // VDPBF16PS adds a pair's odd product, then its even one, each rounded (Intel's definition); the
    // emulation does the same, so on normal numbers (no denormals, which the instruction flushes) the two
    // paths agree bit for bit, not only to rounding. Where AMX is the default, a child takes VDPBF16PS.
    const vdp = path === "avx512bf16" ? { path, hex: productHex() } : childProduct("avx512bf16");
    assert.equal(vdp.path, "avx512bf16", "VGG_BF16=avx512bf16 did not select VDPBF16PS");
    const emulated = childProduct("emulate");
    assert.equal(emulated.path, "emulation");
    assert.ok(
      emulated.hex.length > 0 && emulated.hex === vdp.hex,
      "the emulation's bits differ from VDPBF16PS's",
    );
  });

  test("the AMX path (TDPBF16PS) is in use where the CPU and OS allow it, and passes the suite above", (t) => {
    const info = addon.info();
    const missing = ["amx-tile", "amx-bf16"].filter((f) => !info.cpuFeatures.includes(f));
    if (path !== "amx") {
      t.skip(
        missing.length > 0
          ? `this CPU (or OS) lacks ${missing.join(", ")}: the AMX path is not tested`
          : `the amx ISA level is not active (VGG_NATIVE_ISA=${process.env.VGG_NATIVE_ISA ?? ""}): the AMX path is not tested`,
      );
      return;
    }
    // This process ran the suite on AMX; its bits differ from VDPBF16PS's only in the order of the float32
    // sums (the tile instruction's own order), which the tolerances above allow.
    assert.equal(missing.length, 0);
    assert.notEqual(childProduct("avx512bf16").hex, "", "the VDPBF16PS child computed nothing");
  });

  // The same suite on the other paths, in child processes because the path is fixed at load.
  test("the emulation passes the same suite (VGG_BF16=emulate)", () => {
    childSuite("emulate", "emulation");
  });

  test("the VDPBF16PS path passes the same suite where AMX is the default (VGG_BF16=avx512bf16)", (t) => {
    if (path !== "amx") {
      t.skip(
        "AMX is not this machine's bf16 path, so the suite above ran on VDPBF16PS or the emulation itself",
      );
      return;
    }
    childSuite("avx512bf16", "avx512bf16");
  });
}
