// 1 thread vs 2 threads on the native backend, bit for bit. Every kernel is run on the same inputs with
// setNumThreads(1) and setNumThreads(2), under each forced conv algorithm, and the outputs compared as
// bytes. What holds (docs/hardening.md):
// - identical: GEMM, conv forward, conv input gradient (same algorithm), bias gradient, pooling, batch norm,
//   softmax cross-entropy, ReLU, SGD: each thread owns whole output elements and every sum is reduced in
//   the same order whatever the split;
// - not identical, by rounding only: the conv weight gradient when the batch is split over the threads
//   (each thread sums its images into a private partial, then the partials are added: the summation order
//   depends on the thread count), and the Winograd input gradient of an uneven batch (n odd, n < 8): with
//   2 threads it runs one image at a time as GEMM + col2im instead of Winograd, a different algorithm.
// Under "auto" the algorithm itself is measured per thread count, so it may differ too; this test forces it.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Conv2dGeometry, Pool2dGeometry } from "../src/backend/backend.js";
import { type ConvAlgorithm, loadNativeAddon, NativeBackend } from "../src/backend/native.js";
import { convGeometry } from "./helpers.js";

const addon = loadNativeAddon();

function randn(len: number, seed: number): Float32Array {
  const a = new Float32Array(len);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    a[i] = s / 2147483648 - 1;
  }
  return a;
}

/** Runs every kernel once and returns the outputs by name. */
function runAll(be: NativeBackend): Map<string, Float32Array | Int32Array | number> {
  const out = new Map<string, Float32Array | Int32Array | number>();
  // GEMM, all transpositions, sizes that are not multiples of the 6x16 tile.
  for (const [ta, tb] of [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ] as const) {
    const [m, n, k] = [67, 45, 283];
    const c = new Float32Array(m * n);
    be.gemm(c, randn(m * k, 1), randn(k * n, 2), m, n, k, ta, tb, 0);
    out.set(`gemm ${ta ? "T" : "N"}${tb ? "T" : "N"}`, c);
  }
  const geoms: [string, Conv2dGeometry][] = [
    ["conv 3x3 batch 4", convGeometry(4, 5, 30, 30, 24, 3, 1, 1)],
    ["conv 3x3 batch 3", convGeometry(3, 24, 15, 15, 20, 3, 1, 1)],
    ["conv 3x3 batch 1", convGeometry(1, 8, 28, 28, 16, 3, 1, 1)],
    ["conv 1x1", convGeometry(4, 16, 9, 9, 12, 1, 1, 0)],
    ["conv 5x5 stride 2", convGeometry(3, 6, 17, 17, 10, 5, 2, 2)],
    ["conv grey first layer", convGeometry(4, 1, 28, 28, 16, 3, 1, 1)],
  ];
  for (const [name, g] of geoms) {
    const xLen = g.n * g.cIn * g.h * g.w;
    const yLen = g.n * g.cOut * g.outH * g.outW;
    const wLen = g.cOut * g.cIn * g.kh * g.kw;
    const x = randn(xLen, 3);
    const w = randn(wLen, 4);
    const dy = randn(yLen, 5);
    const y = new Float32Array(yLen);
    be.conv2dForward(y, x, w, randn(g.cOut, 6), g, true);
    out.set(`${name} forward`, y);
    const dx = new Float32Array(xLen);
    be.conv2dBackwardInput(dx, dy, w, g);
    out.set(`${name} backward input`, dx);
    const dw = new Float32Array(wLen);
    const db = new Float32Array(g.cOut);
    be.conv2dBackwardWeight(dw, db, dy, x, g);
    out.set(`${name} backward weight`, dw);
    out.set(`${name} backward bias`, db);
  }
  const p: Pool2dGeometry = {
    n: 4,
    c: 12,
    h: 15,
    w: 15,
    kh: 2,
    kw: 2,
    strideH: 2,
    strideW: 2,
    padH: 0,
    padW: 0,
    outH: 7,
    outW: 7,
  };
  const px = randn(4 * 12 * 15 * 15, 7);
  const py = new Float32Array(4 * 12 * 49);
  const arg = new Int32Array(py.length);
  be.maxPool2dForward(py, arg, px, p);
  out.set("max pool forward", py);
  out.set("max pool argmax", arg);
  const pdx = new Float32Array(px.length);
  be.maxPool2dBackward(pdx, randn(py.length, 8), arg, p);
  out.set("max pool backward", pdx);
  const [n, c, hw] = [8, 16, 49];
  const bx = randn(n * c * hw, 9);
  const by = new Float32Array(bx.length);
  const mean = new Float32Array(c);
  const inv = new Float32Array(c);
  const gamma = randn(c, 10);
  be.batchNormForwardTrain(by, mean, inv, bx, gamma, randn(c, 11), n, c, hw, 1e-5);
  out.set("batch norm forward", by);
  out.set("batch norm mean", mean);
  const bdx = new Float32Array(bx.length);
  const dg = new Float32Array(c);
  const dbeta = new Float32Array(c);
  be.batchNormBackward(bdx, dg, dbeta, randn(bx.length, 12), bx, gamma, mean, inv, n, c, hw);
  out.set("batch norm backward", bdx);
  out.set("batch norm dgamma", dg);
  const logits = randn(32 * 10, 13);
  const dlogits = new Float32Array(logits.length);
  const targets = Int32Array.from({ length: 32 }, (_, i) => i % 10);
  out.set("softmax cross-entropy loss", be.softmaxCrossEntropy(dlogits, logits, targets, 32, 10));
  out.set("softmax cross-entropy gradient", dlogits);
  const big = randn(100_003, 14);
  const r = new Float32Array(big.length);
  be.relu(r, big);
  out.set("relu", r);
  const param = randn(100_003, 15);
  const buf = new Float32Array(param.length);
  be.sgdStep(param, randn(param.length, 16), buf, {
    lr: 0.1,
    momentum: 0.9,
    dampening: 0,
    weightDecay: 1e-4,
    nesterov: true,
    firstStep: true,
  });
  out.set("sgd step", param);
  return out;
}

function sameBits(a: Float32Array | Int32Array | number, b: Float32Array | Int32Array | number): boolean {
  if (typeof a === "number" || typeof b === "number") return Object.is(a, b);
  return (
    Buffer.compare(
      Buffer.from(a.buffer, a.byteOffset, a.byteLength),
      Buffer.from(b.buffer, b.byteOffset, b.byteLength),
    ) === 0
  );
}

/** max |a - b| / max |a| over the outputs. */
function relDiff(
  a: Float32Array | Int32Array | number | undefined,
  b: Float32Array | Int32Array | number | undefined,
): number {
  if (typeof a !== "object" || typeof b !== "object") return Math.abs(Number(a) - Number(b));
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(a[i]));
  }
  return diff / (scale || 1);
}

// The batch of each conv case, and whether it is a 3x3 stride-1 conv Winograd applies to.
const BATCH_SPLIT_WITH_2_THREADS = (name: string) => /batch 4|1x1|grey/.test(name);
const WINOGRAD_UNEVEN = (name: string) => /conv 3x3 batch [13]/.test(name);

function mayDiffer(output: string, algorithm: ConvAlgorithm): boolean {
  // Winograd's weight gradient needs the batch split over the threads: on 2 threads an uneven batch runs
  // as GEMM instead (a different algorithm), on 1 thread as Winograd.
  if (output.endsWith("backward weight"))
    return BATCH_SPLIT_WITH_2_THREADS(output) || (algorithm === "winograd" && WINOGRAD_UNEVEN(output));
  if (output.endsWith("backward input")) return algorithm === "winograd" && WINOGRAD_UNEVEN(output);
  return false;
}

for (const algorithm of ["direct", "winograd"] as ConvAlgorithm[]) {
  test(`1 and 2 threads give bit-identical results except the documented weight-gradient and Winograd cases (algorithm ${algorithm})`, (t) => {
    if (addon instanceof Error) {
      t.skip("the native addon is not built");
      return;
    }
    const be = new NativeBackend(addon);
    const before = be.numThreads();
    try {
      addon.setConvAlgorithm(algorithm);
      be.setNumThreads(1);
      const one = runAll(be);
      be.setNumThreads(2);
      const two = runAll(be);
      const differ = [...one.keys()].filter((k) => !sameBits(one.get(k) ?? 0, two.get(k) ?? 0));
      t.diagnostic(`${algorithm}: ${one.size - differ.length} of ${one.size} outputs bit-identical`);
      for (const k of differ)
        t.diagnostic(
          `  differs: ${k} (max relative difference ${relDiff(one.get(k), two.get(k)).toExponential(1)})`,
        );
      // Only the documented cases may differ, and only by float rounding.
      assert.deepEqual(
        differ.filter((k) => !mayDiffer(k, algorithm)),
        [],
      );
      for (const k of differ) assert.ok(relDiff(one.get(k), two.get(k)) < 1e-4, k);
    } finally {
      addon.setConvAlgorithm("auto");
      be.setNumThreads(before);
    }
  });
}
