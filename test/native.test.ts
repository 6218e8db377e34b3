// The native backend against the reference backend on random shapes (forward and every gradient, every
// method), at the best ISA level the CPU has (test/native-isa.test.ts reruns this file under every other
// level the CPU has, with VGG_NATIVE_ISA set);
// plus the argument guards of both the TypeScript wrapper and the C++ binding, with their exact messages.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { noGrad } from "../src/autograd.js";
import type { Conv2dGeometry, Pool2dGeometry, SgdOptions } from "../src/backend/backend.js";
import { backend, setBackend } from "../src/backend/index.js";
import { loadNativeAddon, type NativeAddon, NativeBackend, nativeInfo } from "../src/backend/native.js";
import { ReferenceBackend } from "../src/backend/reference.js";
import * as nn from "../src/nn/index.js";
import * as F from "../src/ops/index.js";
import { crossEntropy } from "../src/ops/loss.js";
import { maxPool2dGeometry } from "../src/ops/pool.js";
import { SGD } from "../src/optim/sgd.js";
import { Generator } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";
import { convGeometry } from "./helpers.js";

const forcedIsa = process.env.VGG_NATIVE_ISA || undefined;
const loaded = loadNativeAddon();
// `npm install` builds the addon, so a missing addon is a failure, not a skip.
if (loaded instanceof Error) throw new Error(`native tests need the addon: ${loaded.message}`);
const addon: NativeAddon = loaded;
const native = new NativeBackend(addon);
const ref = new ReferenceBackend();

// mulberry32: a small seeded generator so failures reproduce.
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(12345);
function randn(len: number): Float32Array {
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) a[i] = rand() * 2 - 1;
  return a;
}

/** Asserts max |a - b| <= tol * (1 + max |b|) and returns the max difference. */
function close(actual: Float32Array, expected: Float32Array, what: string, tol = 2e-5): number {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < actual.length; i++) {
    if (Number.isNaN(expected[i])) {
      assert.ok(Number.isNaN(actual[i]), `${what}[${i}]: expected NaN but received ${actual[i]}`);
      continue;
    }
    if (expected[i] === actual[i]) continue; // also covers equal infinities
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
  }
  assert.ok(maxDiff <= tol * (1 + maxRef), `${what}: max difference ${maxDiff} (max |ref| ${maxRef})`);
  return maxDiff;
}

// Batch 1 and odd batches, channels not multiples of 8, 1x1 spatial, padding 0/1/2, stride 1/2, kernel 1/3/5.
const convCases: Conv2dGeometry[] = [
  convGeometry(1, 1, 7, 9, 3, 3, 1, 1),
  convGeometry(2, 3, 9, 7, 5, 3, 1, 1),
  convGeometry(3, 5, 11, 11, 7, 3, 2, 1),
  convGeometry(5, 17, 6, 5, 19, 1, 1, 0),
  convGeometry(1, 9, 1, 1, 13, 1, 1, 0),
  convGeometry(2, 4, 1, 1, 6, 3, 1, 1),
  convGeometry(3, 6, 8, 10, 11, 5, 1, 2),
  convGeometry(4, 3, 13, 9, 8, 5, 2, 2),
  convGeometry(1, 20, 12, 12, 33, 3, 1, 0),
  convGeometry(2, 7, 10, 10, 9, 1, 2, 0),
  convGeometry(6, 2, 5, 5, 3, 3, 2, 0),
  convGeometry(2, 16, 15, 15, 17, 3, 1, 1),
  // One input channel (kdim 9 <= 16): the weight gradient's dot-product path, across pixel chunks of 512.
  convGeometry(2, 1, 30, 29, 16, 3, 1, 1),
  convGeometry(4, 1, 12, 12, 3, 3, 2, 0),
];

function convLabel(g: Conv2dGeometry): string {
  return `n${g.n} ${g.cIn}->${g.cOut} ${g.h}x${g.w} k${g.kh} s${g.strideH} p${g.padH}`;
}

function checkConv(g: Conv2dGeometry): void {
  const xLen = g.n * g.cIn * g.h * g.w;
  const wLen = g.cOut * g.cIn * g.kh * g.kw;
  const yLen = g.n * g.cOut * g.outH * g.outW;
  const x = randn(xLen);
  const w = randn(wLen);
  const bias = randn(g.cOut);
  const dy = randn(yLen);
  const label = convLabel(g);
  for (const relu of [false, true]) {
    const [yN, yR] = [new Float32Array(yLen), new Float32Array(yLen)];
    native.conv2dForward(yN, x, w, bias, g, relu);
    ref.conv2dForward(yR, x, w, bias, g, relu);
    close(yN, yR, `forward ${label} relu=${relu}`);
  }
  const [yN, yR] = [new Float32Array(yLen), new Float32Array(yLen)];
  native.conv2dForward(yN, x, w, null, g, false);
  ref.conv2dForward(yR, x, w, null, g, false);
  close(yN, yR, `forward ${label} no bias`);
  // Stale contents in the outputs must be overwritten.
  const [dxN, dxR] = [randn(xLen), new Float32Array(xLen)];
  native.conv2dBackwardInput(dxN, dy, w, g);
  ref.conv2dBackwardInput(dxR, dy, w, g);
  close(dxN, dxR, `backward input ${label}`);
  const [dwN, dwR, dbN, dbR] = [randn(wLen), new Float32Array(wLen), randn(g.cOut), new Float32Array(g.cOut)];
  native.conv2dBackwardWeight(dwN, dbN, dy, x, g);
  ref.conv2dBackwardWeight(dwR, dbR, dy, x, g);
  close(dwN, dwR, `backward weight ${label}`);
  close(dbN, dbR, `backward bias ${label}`);
  native.conv2dBackwardWeight(dwN, null, dy, x, g);
  close(dwN, dwR, `backward weight without bias ${label}`);
}

test(`reports the instruction set in use (${forcedIsa ?? "default"})`, () => {
  const info = nativeInfo();
  assert.equal(info.available, true);
  assert.equal(info.isa, forcedIsa ?? info.bestIsa);
  assert.equal(native.name, "native");
});

test("gemm matches the reference for every transpose and beta, across cache-block edges", () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [5, 7, 3],
    [6, 16, 8],
    [13, 33, 17],
    [7, 5, 0],
    [0, 4, 3],
    [150, 70, 300],
    [40, 3100, 9],
    // Several k blocks, with B packed row by row into panels and a partial last panel.
    [9, 1101, 800],
    // Batch <= 4 against B^T takes the streaming GEMV path (vector body and scalar tail).
    [3, 40, 37],
    [4, 2000, 70],
    [1, 33, 16],
    // Groups of 8 (batch 1), 4 (batch 2) and 2 (batch 3-4) rows of B, with leftover rows.
    [1, 1003, 300],
    [2, 77, 19],
  ];
  for (const [m, n, k] of shapes)
    for (const transA of [false, true])
      for (const transB of [false, true])
        for (const beta of [0, 1] as const)
          gemmAgainstReference(randn(m * k), m, n, k, transA, transB, beta, `gemm ${m}x${n}x${k}`);
});

/** native.gemm against ref.gemm on this A, a random B and a random C to add to (beta 1). */
function gemmAgainstReference(
  a: Float32Array,
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
  beta: 0 | 1,
  label: string,
): void {
  const b = randn(k * n);
  const c0 = randn(m * n);
  const [cN, cR] = [c0.slice(), c0.slice()];
  native.gemm(cN, a, b, m, n, k, transA, transB, beta);
  ref.gemm(cR, a, b, m, n, k, transA, transB, beta);
  close(cN, cR, `${label} tA=${transA} tB=${transB} beta=${beta}`, 1e-5 * Math.sqrt(k + 1));
}

/** randn with each element zero with probability 1 - density (ReLU and dropout zeros). */
function sparseRandn(len: number, density: number): Float32Array {
  const a = randn(len);
  for (let i = 0; i < len; i++) if (rand() >= density) a[i] = 0;
  return a;
}

test("gemm with a mostly-zero A takes the sparse path and matches the reference (slice, block and row edges)", () => {
  const shapes: [number, number, number][] = [
    // An edge slice (600 = 9 x 64 + 24) and a transpose tail (300 = 37 x 8 + 4).
    [37, 600, 300],
    // Several column blocks (1100 > 512) and two k blocks (400 = 200 + 200); a thin k; one row (against
    // B^T, the GEMV path, whatever A holds) with three k blocks.
    [5, 1100, 400],
    [300, 520, 16],
    [1, 2100, 1000],
  ];
  for (const [m, n, k] of shapes)
    for (const density of [0, 0.05, 0.3])
      for (const transA of [false, true])
        for (const transB of [false, true])
          for (const beta of [0, 1] as const) {
            const what = `sparse gemm ${m}x${n}x${k} density ${density}`;
            const before = addon.info().sparseGemmCalls;
            gemmAgainstReference(sparseRandn(m * k, density), m, n, k, transA, transB, beta, what);
            // At most 4 rows of A against B^T stream B once (the GEMV path) whatever A holds.
            const gemv = m <= 4 && !transA && transB;
            const call = `${what} tA=${transA} tB=${transB} beta=${beta}`;
            assert.equal(addon.info().sparseGemmCalls - before, gemv ? 0 : 1, `${call}: sparse path taken`);
          }
  // A dense A (70% nonzeros) stays on the dense path.
  const dense = addon.info().sparseGemmCalls;
  const c = new Float32Array(37 * 600);
  native.gemm(c, sparseRandn(37 * 300, 0.7), randn(300 * 600), 37, 600, 300, false, false, 0);
  assert.equal(addon.info().sparseGemmCalls, dense, "a dense A took the sparse path");
});

test("the sparse gemm keeps IEEE semantics: a zero of A against Inf or NaN in B gives NaN, as the dense product does", () => {
  const [m, n, k] = [40, 640, 90];
  for (const transB of [false, true]) {
    const a = sparseRandn(m * k, 0.2);
    const b = randn(k * n);
    // op(B)[p][j] for a few (p, j): Inf, -Inf, NaN.
    const at = (p: number, j: number) => (transB ? j * k + p : p * n + j);
    b[at(3, 5)] = Infinity;
    b[at(40, 600)] = -Infinity;
    b[at(89, 639)] = Number.NaN;
    const before = addon.info().sparseGemmCalls;
    const [cN, cR] = [new Float32Array(m * n), new Float32Array(m * n)];
    native.gemm(cN, a, b, m, n, k, false, transB, 0);
    ref.gemm(cR, a, b, m, n, k, false, transB, 0);
    assert.equal(addon.info().sparseGemmCalls, before + 1, "took the sparse path");
    close(cN, cR, `sparse gemm with non-finite B (transB=${transB})`, 1e-4);
    // Column 5 is NaN in the rows where a[i][3] == 0, Inf-signed elsewhere.
    for (let i = 0; i < m; i++) {
      if (a[i * k + 3] === 0) assert.ok(Number.isNaN(cN[i * n + 5]), `row ${i} column 5`);
      else assert.equal(Math.abs(cN[i * n + 5]), Infinity, `row ${i} column 5`);
    }
  }
});

test("the sparse gemm is the same bit for bit on 1, 2, 3 and 9 threads (columns or, with 9, rows split)", () => {
  for (const [m, n, k, transA] of [
    [50, 1500, 600, false],
    [900, 520, 40, true],
  ] as const) {
    const a = sparseRandn(m * k, 0.25);
    const b = randn(k * n);
    const threads = [1, 2, 3, 9];
    const results = threads.map((t) => {
      native.setNumThreads(t);
      const c = new Float32Array(m * n);
      native.gemm(c, a, b, m, n, k, transA, false, 0);
      return c;
    });
    native.setNumThreads(2);
    for (let t = 1; t < threads.length; t++)
      assert.deepEqual(results[t], results[0], `${m}x${n}x${k}: ${threads[t]} threads`);
  }
});

test("gemm is the same on 1, 2 and 3 threads", () => {
  const [m, n, k] = [97, 301, 130];
  const a = randn(m * k);
  const b = randn(k * n);
  const results = [1, 2, 3].map((t) => {
    native.setNumThreads(t);
    assert.equal(native.numThreads(), t);
    const c = new Float32Array(m * n);
    native.gemm(c, a, b, m, n, k, false, false, 0);
    return c;
  });
  native.setNumThreads(2);
  const cR = new Float32Array(m * n);
  ref.gemm(cR, a, b, m, n, k, false, false, 0);
  for (const c of results) close(c, cR, "threaded gemm", 1e-4);
});

test("gemm with a prepacked B equals gemm bit for bit (panel and k-block edges, both layouts, 1-3 threads, dense and sparse A)", () => {
  const shapes: [number, number, number][] = [
    [5, 1, 1],
    [6, 16, 384],
    [7, 17, 385],
    [130, 1000, 777], // a 4-row tail tile, a 8-column tail panel, 3 k blocks
    [128, 64, 300], // a 2-row tail tile
    [300, 10, 50], // more rows than columns: the threads split the rows
    [9, 0, 5],
    [9, 4, 0],
    // With a mostly-zero A both take the sparse path: an edge slice (600 = 9 x 64 + 24), 3 k blocks; rows split.
    [40, 600, 800],
    [600, 520, 30],
  ];
  try {
    for (const threads of [1, 2, 3]) {
      native.setNumThreads(threads);
      for (const [m, n, k] of shapes)
        for (const transB of [false, true])
          for (const [beta, density] of [
            [0, 1],
            [1, 1],
            [0, 0.2],
            [1, 0.2],
          ] as const) {
            const label = `${m}x${n}x${k} tB=${transB} beta=${beta} density=${density} threads=${threads}`;
            const a = density < 1 ? sparseRandn(m * k, density) : randn(m * k);
            const b = randn(k * n);
            const c0 = randn(m * n);
            const packed = native.gemmPackB(b, n, k, transB);
            assert.equal(packed.length, Math.ceil(n / 16) * 16 * k, label);
            const [cP, cG, cR] = [c0.slice(), c0.slice(), c0.slice()];
            const before = addon.info().sparseGemmCalls;
            native.gemmPackedB(cP, a, packed, m, n, k, beta);
            native.gemm(cG, a, b, m, n, k, false, transB, beta);
            const sparse = density < 1 && n >= 512;
            assert.equal(
              addon.info().sparseGemmCalls - before,
              sparse ? 2 : 0,
              `${label}: sparse path taken`,
            );
            ref.gemm(cR, a, b, m, n, k, false, transB, beta);
            assert.deepEqual(cP, cG, label);
            close(cP, cR, label, 1e-5 * Math.sqrt(k + 1));
          }
    }
  } finally {
    native.setNumThreads(2);
  }
  // A packed B for other sizes, or a view of one at a misaligned address, is refused.
  const packed = native.gemmPackB(randn(4 * 32), 32, 4, false);
  assert.throws(
    () => native.gemmPackedB(new Float32Array(6 * 16), randn(6 * 4), packed, 6, 16, 4, 0),
    /Expected packed of length 64 but received length 128/,
  );
  const view = new Float32Array(packed.buffer, 4, 64);
  assert.throws(
    () => addon.gemmPackedB(new Float32Array(6 * 16), randn(6 * 4), view, 6, 16, 4, 0),
    /Expected packed to be a 32-byte aligned array made by gemmPackB/,
  );
});

test("prepackForInference: Linear outputs are unchanged bit for bit and follow every change of the weights", () => {
  const previous = backend().name;
  setBackend("native");
  const be = backend();
  const packedGemm = be.gemmPackedB;
  assert.ok(packedGemm, "the native backend has a packed GEMM");
  let packedCalls = 0;
  be.gemmPackedB = (...args) => {
    packedCalls++;
    return packedGemm.apply(be, args);
  };
  try {
    const build = () => new nn.Sequential(new nn.Linear(37, 70), new nn.ReLU(), new nn.Linear(70, 5));
    const net = build();
    const x = new Tensor(randn(9 * 37), [9, 37]);
    const outputs = (m: nn.Module, input = x) => noGrad(() => m.forward(input)).data.slice();
    const x4 = new Tensor(x.data.slice(0, 4 * 37), [4, 37]);
    const plain = outputs(net.eval());
    const plain4 = outputs(net, x4);
    assert.equal(nn.prepackForInference(net.train()), net);
    assert.equal(net.training, false, "prepackForInference puts the model in eval mode");
    assert.deepEqual(outputs(net), plain);
    assert.equal(packedCalls, 2, "both layers ran on their packed weights");
    // Batch <= 4 reads the weights directly (GEMV), as does a forward that records gradients.
    packedCalls = 0;
    assert.deepEqual(outputs(net, x4), plain4);
    assert.equal(packedCalls, 0);
    const y = net.forward(x);
    assert.equal(packedCalls, 0);
    assert.deepEqual(y.data, plain);
    // An optimiser step (in eval mode here) changes the weights in place: the next forward repacks.
    const opt = new SGD(net.parameters(), { lr: 0.1 });
    crossEntropy(
      y,
      Int32Array.from({ length: 9 }, (_, i) => i % 5),
    ).backward();
    opt.step();
    const fresh = build();
    fresh.loadStateDict(net.stateDict());
    const stepped = outputs(fresh.eval());
    assert.notDeepEqual(stepped, plain);
    assert.deepEqual(outputs(net), stepped);
    // So does loadStateDict, and a direct write followed by markModified().
    net.loadStateDict(build().stateDict());
    fresh.loadStateDict(net.stateDict());
    assert.deepEqual(outputs(net), outputs(fresh));
    const first = net.modules()[1] as nn.Linear;
    first.weight.data[0] += 1;
    first.weight.markModified();
    fresh.loadStateDict(net.stateDict());
    assert.deepEqual(outputs(net), outputs(fresh));
    // prepack(false) goes back to the plain GEMM.
    packedCalls = 0;
    for (const m of net.modules()) if (m instanceof nn.Linear) m.prepack(false);
    assert.deepEqual(outputs(net), outputs(fresh));
    assert.equal(packedCalls, 0);
  } finally {
    be.gemmPackedB = packedGemm;
    setBackend(previous);
  }
});

test("the native dropout mask draws the generator's stream exactly (mask, state, and the dropout op on both backends)", () => {
  for (const [len, p] of [
    [0, 0.5],
    [1, 0.5],
    [1000, 0.5],
    [4097, 0.1],
    [333, 0],
    [333, 1],
  ] as const) {
    const keep = p === 1 ? 0 : 1 / (1 - p);
    const [gN, gJ] = [new Generator(7), new Generator(7)];
    const mask = new Float32Array(len);
    native.dropoutMask(mask, p, keep, gN.stateWords());
    const expected = Float32Array.from({ length: len }, () => (gJ.random() >= p ? keep : 0));
    assert.deepEqual(mask, expected, `len ${len}, p ${p}`);
    assert.deepEqual(gN.getState(), gJ.getState(), "the state advances by one draw per element");
  }
  assert.throws(
    () => native.dropoutMask(new Float32Array(3), 1.5, 2, new Uint32Array(4)),
    /Expected p to be a probability/,
  );
  assert.throws(
    () => native.dropoutMask(new Float32Array(3), 0.5, 2, new Uint32Array(3)),
    /Expected state of length 4/,
  );
  assert.throws(
    () => addon.dropoutMask(new Float32Array(3), 0.5, 2, new Int32Array(4) as unknown as Uint32Array),
    /Expected state to be a Uint32Array but received Int32Array/,
  );
  // The dropout op gives the same output and gradient on both backends from the same seed.
  const previous = backend().name;
  try {
    const outputs = (name: "native" | "reference") => {
      setBackend(name);
      const x = new Tensor(randnSeeded(5 * 300), [5, 300], { requiresGrad: true });
      const y = F.dropout(x, 0.3, true, new Generator(11));
      y.backward(new Tensor(new Float32Array(y.size).fill(1), y.shape));
      return [y.data.slice(), x.grad?.data.slice()];
    };
    assert.deepEqual(outputs("native"), outputs("reference"));
  } finally {
    setBackend(previous);
  }
});

test("the batch <= 4 GEMV gives bit-identical results on 1, 2 and 3 threads", () => {
  for (const m of [1, 2, 3, 4]) {
    const [n, k] = [1037, 611];
    const a = randn(m * k);
    const b = randn(n * k);
    const results = [1, 2, 3].map((t) => {
      native.setNumThreads(t);
      const c = new Float32Array(m * n);
      native.gemm(c, a, b, m, n, k, false, true, 0);
      return c;
    });
    native.setNumThreads(2);
    assert.deepEqual(results[1], results[0], `m=${m}: 2 threads`);
    assert.deepEqual(results[2], results[0], `m=${m}: 3 threads`);
  }
});

test("conv2d forward (bias, ReLU) and both gradients match the reference on random shapes", () => {
  for (const threads of [2, 1, 3]) {
    native.setNumThreads(threads);
    for (const g of convCases) checkConv(g);
  }
  native.setNumThreads(2);
});

test("small planes run as one GEMM over the whole batch and match the reference", () => {
  const cases = [
    convGeometry(5, 7, 4, 4, 9, 3, 1, 1),
    convGeometry(3, 130, 2, 2, 20, 3, 1, 1),
    convGeometry(4, 6, 5, 5, 5, 3, 1, 1),
    convGeometry(6, 9, 3, 5, 4, 1, 1, 0),
    convGeometry(2, 3, 9, 9, 4, 3, 2, 1),
  ];
  // Forced to the direct algorithm they always run as one GEMM; measured (auto), 3x3 ones may run as
  // Winograd (either tile size) over groups of images instead, and must match the reference either way.
  try {
    for (const algorithm of ["direct", "auto"] as const) {
      native.setConvAlgorithm(algorithm);
      for (const threads of [2, 3, 1]) {
        native.setNumThreads(threads);
        for (const g of cases) {
          const kernel = native.convKernel(g, "forward");
          if (algorithm === "direct") assert.equal(kernel, "im2col+gemm (batch)");
          checkConv(g);
          const after = native.convKernel(g, "forward");
          assert.ok(
            [
              "im2col+gemm (batch)",
              "winograd F(2x2,3x3) (image groups)",
              "winograd F(4x4,3x3) (image groups)",
              "dense (tiny plane)",
            ].includes(after),
            after,
          );
        }
      }
    }
  } finally {
    native.setConvAlgorithm("auto");
    native.setNumThreads(2);
  }
  // One image, or more than 32 output pixels: the per-image paths.
  assert.notEqual(native.convKernel(convGeometry(1, 7, 4, 4, 9, 3, 1, 1), "forward"), "im2col+gemm (batch)");
  assert.notEqual(native.convKernel(convGeometry(4, 7, 9, 9, 9, 3, 1, 1), "forward"), "im2col+gemm (batch)");
});

test("tiny planes (at most 4 pixels in and out) run as one dense GEMM per pass, match the reference and do not depend on the thread count", () => {
  const cases = [
    convGeometry(5, 7, 2, 2, 9, 3, 1, 1), // 2x2, the last block of a 32x32 input
    convGeometry(3, 130, 2, 2, 20, 3, 1, 1),
    convGeometry(4, 6, 1, 1, 5, 3, 1, 1), // 1x1: the centre tap only
    convGeometry(2, 3, 1, 2, 4, 3, 1, 1),
    convGeometry(3, 4, 2, 1, 6, 1, 1, 0),
    convGeometry(2, 5, 4, 4, 3, 3, 2, 1), // 16 pixels in: not tiny, im2col or Winograd as measured
  ];
  for (const g of cases) {
    const tiny = g.h * g.w <= 4;
    for (const pass of ["forward", "backward", "weight"] as const) {
      const kernel = native.convKernel(g, pass);
      if (tiny) assert.equal(kernel, "dense (tiny plane)", `${convLabel(g)} ${pass}`);
      else assert.notEqual(kernel, "dense (tiny plane)", `${convLabel(g)} ${pass}`);
    }
    checkConv(g);
    // The same bits on 1, 2 and 3 threads: every output of each GEMM is summed in one order.
    const x = randn(g.n * g.cIn * g.h * g.w);
    const w = randn(g.cOut * g.cIn * g.kh * g.kw);
    const dy = randn(g.n * g.cOut * g.outH * g.outW);
    const runs = [1, 2, 3].map((t) => {
      native.setNumThreads(t);
      const y = new Float32Array(dy.length);
      const dx = new Float32Array(x.length);
      const dw = new Float32Array(w.length);
      native.conv2dForward(y, x, w, null, g, true);
      native.conv2dBackwardInput(dx, dy, w, g, x);
      native.conv2dBackwardWeight(dw, null, dy, x, g);
      return [y, dx, dw];
    });
    native.setNumThreads(2);
    if (tiny) {
      assert.deepEqual(runs[1], runs[0], `${convLabel(g)}: 2 threads`);
      assert.deepEqual(runs[2], runs[0], `${convLabel(g)}: 3 threads`);
    }
  }
  // Forced algorithms keep their own kernels.
  try {
    native.setConvAlgorithm("direct");
    assert.equal(native.convKernel(cases[0], "forward"), "im2col+gemm (batch)");
  } finally {
    native.setConvAlgorithm("auto");
  }
});

test("the direct forward for few taps per filter matches the reference (row blocks, vector and scalar tails)", () => {
  const cases = [
    convGeometry(2, 1, 9, 70, 5, 3, 1, 1), // one 64-pixel block and a 6-pixel scalar tail
    convGeometry(3, 1, 13, 17, 4, 3, 1, 0), // padding 0: two 8-pixel vectors and a tail of 1
    convGeometry(2, 1, 40, 150, 16, 3, 1, 1),
    convGeometry(1, 4, 6, 7, 3, 2, 1, 1), // 2x2 kernel, 4 channels: 16 taps
    convGeometry(1, 1, 3, 3, 2, 3, 1, 1), // (small planes of a larger batch run as one GEMM)
  ];
  for (const threads of [2, 3, 1])
    for (const g of cases) {
      native.setNumThreads(threads);
      assert.equal(native.convKernel(g, "forward"), "direct (few taps)", convLabel(g));
      checkConv(g);
    }
  native.setNumThreads(2);
});

test("Winograd F(2x2,3x3) and F(4x4,3x3) forward and input gradient match the reference (padding 0/1/2, odd sizes)", () => {
  const cases = [
    convGeometry(2, 3, 9, 7, 5, 3, 1, 1),
    convGeometry(4, 17, 12, 11, 19, 3, 1, 0),
    convGeometry(2, 8, 5, 6, 9, 3, 1, 2),
    convGeometry(6, 33, 14, 14, 40, 3, 1, 1),
    convGeometry(2, 2, 1, 1, 3, 3, 1, 1),
    // Wide rows take the 8-tile vector transforms; 324 tiles cross the tile-chunk boundary mid-row.
    convGeometry(2, 5, 20, 37, 11, 3, 1, 1),
    convGeometry(2, 4, 10, 40, 6, 3, 1, 0),
    convGeometry(2, 60, 36, 36, 70, 3, 1, 1),
    // Batch 1 and 3 on 2 threads: one image at a time, its tiles split over the threads.
    convGeometry(1, 8, 18, 22, 9, 3, 1, 1),
    convGeometry(3, 5, 20, 37, 11, 3, 1, 1),
    // Maps of 1 or 2 F(4x4) tiles across: the 8 lanes take tiles of several rows and images.
    convGeometry(9, 6, 4, 4, 5, 3, 1, 1),
    convGeometry(5, 7, 8, 6, 9, 3, 1, 1),
    convGeometry(11, 3, 3, 5, 4, 3, 1, 0),
  ];
  try {
    for (const algorithm of ["winograd", "winograd4", "auto"] as const) {
      native.setConvAlgorithm(algorithm);
      for (const g of cases) {
        checkConv(g);
        const kernel = native.convKernel(g, "forward");
        if (algorithm === "winograd") assert.equal(kernel, "winograd F(2x2,3x3)");
        else if (algorithm === "winograd4") assert.equal(kernel, "winograd F(4x4,3x3)");
        else
          assert.ok(
            [
              "winograd F(2x2,3x3)",
              "winograd F(4x4,3x3)",
              "im2col+gemm",
              "im2col+gemm (batch)",
              "winograd F(2x2,3x3) (image groups)",
              "winograd F(4x4,3x3) (image groups)",
              "dense (tiny plane)",
            ].includes(kernel),
            kernel,
          );
      }
    }
    // The weight gradient's kernel, as `vgg info` reports it (batch 4 splits over 2 threads).
    const split = convGeometry(4, 17, 12, 11, 19, 3, 1, 0);
    native.setConvAlgorithm("winograd");
    assert.equal(native.convKernel(split, "weight"), "winograd F(2x2,3x3)");
    native.setConvAlgorithm("winograd4");
    assert.equal(native.convKernel(split, "weight"), "winograd F(4x4,3x3)");
    native.setConvAlgorithm("direct");
    assert.equal(native.convKernel(split, "weight"), "im2col+gemm");
    assert.equal(native.convKernel(convGeometry(4, 1, 12, 11, 3, 3, 1, 1), "weight"), "direct (few taps)");
    // Shapes Winograd does not cover fall back to im2col + GEMM even when it is forced.
    native.setConvAlgorithm("winograd");
    const strided = convGeometry(2, 3, 9, 9, 4, 3, 2, 1);
    assert.equal(native.convKernel(strided, "forward"), "im2col+gemm");
    checkConv(strided);
  } finally {
    native.setConvAlgorithm("auto");
  }
  assert.throws(() => native.setConvAlgorithm("fast" as never), {
    name: "TypeError",
    message:
      'Expected the conv algorithm to be "auto", "direct", "winograd" or "winograd4" but received fast',
  });
  assert.throws(() => addon.setConvAlgorithm(3 as never), {
    name: "TypeError",
    message:
      'Expected the conv algorithm to be "auto", "direct", "winograd" or "winograd4" but received number 3',
  });
});

test("Winograd's transformed weights are reused only for equal weights (in-place updates, equal copies, many layers)", () => {
  // Batch 1 and 2 take the per-image and batch paths; the transform cache keys on the weights' contents.
  try {
    for (const [algorithm, g] of [
      ["winograd", convGeometry(1, 12, 10, 10, 14, 3, 1, 1)],
      ["winograd", convGeometry(2, 12, 10, 10, 14, 3, 1, 1)],
      ["winograd4", convGeometry(1, 12, 10, 10, 14, 3, 1, 1)],
      ["winograd4", convGeometry(2, 12, 10, 10, 14, 3, 1, 1)],
    ] as const) {
      native.setConvAlgorithm(algorithm);
      const label = `${algorithm} ${convLabel(g)}`;
      const x = randn(g.n * g.cIn * g.h * g.w);
      const dy = randn(g.n * g.cOut * g.outH * g.outW);
      const w = randn(g.cOut * g.cIn * 9);
      const run = (weights: Float32Array) => {
        const [y, yR] = [new Float32Array(dy.length), new Float32Array(dy.length)];
        native.conv2dForward(y, x, weights, null, g, false);
        ref.conv2dForward(yR, x, weights, null, g, false);
        close(y, yR, `forward ${label}`);
        const [dx, dxR] = [new Float32Array(x.length), new Float32Array(x.length)];
        native.conv2dBackwardInput(dx, dy, weights, g);
        ref.conv2dBackwardInput(dxR, dy, weights, g);
        close(dx, dxR, `backward input ${label}`);
        return [y, dx];
      };
      const [y0, dx0] = run(w);
      // The same array changed in place (what an optimiser step does), in the last element only.
      w[w.length - 1] += 0.5;
      const [y1, dx1] = run(w);
      assert.notDeepEqual(y1, y0, "the forward pass must see the updated weights");
      assert.notDeepEqual(dx1, dx0, "the input gradient must see the updated weights");
      // An equal copy in another array gives bit-identical results.
      const [y2, dx2] = run(Float32Array.from(w));
      assert.deepEqual(y2, y1);
      assert.deepEqual(dx2, dx1);
      // More layers than the cache holds, then the first weights again.
      for (let i = 0; i < 40; i++) run(randn(w.length));
      const [y3, dx3] = run(w);
      assert.deepEqual(y3, y1);
      assert.deepEqual(dx3, dx1);
    }
  } finally {
    native.setConvAlgorithm("auto");
  }
});

test("the pooled Winograd epilogue equals conv2d (ReLU) then max-pool, values and argmax, on both tile sizes", () => {
  const cases = [
    convGeometry(4, 8, 16, 16, 12, 3, 1, 1), // batch split over the threads, groups of images
    convGeometry(1, 5, 14, 14, 7, 3, 1, 1), // one image, its tiles split over the threads
    convGeometry(3, 6, 13, 11, 9, 3, 1, 1), // odd sizes: the last row and column are dropped by the pool
    convGeometry(2, 3, 40, 37, 4, 3, 1, 1), // several 8-tile groups per tile row, a short last group
    convGeometry(2, 4, 9, 10, 5, 3, 1, 0), // no padding
    convGeometry(5, 6, 8, 8, 7, 3, 1, 1), // 8x8 and 4x4 maps: F(4x4)'s lanes take tiles of several images
    convGeometry(9, 4, 4, 4, 5, 3, 1, 1),
    convGeometry(3, 5, 6, 7, 3, 3, 1, 1), // odd width, 2 tiles across
  ];
  try {
    for (const algorithm of ["winograd", "winograd4"] as const) {
      native.setConvAlgorithm(algorithm);
      for (const g of cases) {
        const label = `${algorithm} ${convLabel(g)}`;
        const x = randn(g.n * g.cIn * g.h * g.w);
        const w = randn(g.cOut * g.cIn * 9);
        const bias = randn(g.cOut);
        const pg = maxPool2dGeometry([g.n, g.cOut, g.outH, g.outW], { kernelSize: 2 });
        const pooled = g.n * g.cOut * pg.outH * pg.outW;
        const [y, argmax] = [randn(pooled), new Int32Array(pooled).fill(-7)];
        assert.equal(native.conv2dReluMaxPool2dForward(y, argmax, x, w, bias, g), true, label);
        // The same kernel unfused, then the pool: bit-identical values and argmax.
        const conv = new Float32Array(g.n * g.cOut * g.outH * g.outW);
        native.conv2dForward(conv, x, w, bias, g, true);
        const [yN, aN] = [new Float32Array(pooled), new Int32Array(pooled)];
        native.maxPool2dForward(yN, aN, conv, pg);
        assert.deepEqual(y, yN, `values ${label}`);
        assert.deepEqual(argmax, aN, `argmax ${label}`);
        // And against the reference backend.
        const convR = new Float32Array(conv.length);
        ref.conv2dForward(convR, x, w, bias, g, true);
        const [yR, aR] = [new Float32Array(pooled), new Int32Array(pooled)];
        ref.maxPool2dForward(yR, aR, convR, pg);
        close(y, yR, `reference ${label}`);
      }
    }
    // Kernels without a pooled epilogue answer false and write nothing.
    native.setConvAlgorithm("direct");
    const g = cases[0];
    const pooled = g.n * g.cOut * 8 * 8;
    const y = new Float32Array(pooled).fill(3);
    assert.equal(
      native.conv2dReluMaxPool2dForward(
        y,
        new Int32Array(pooled),
        randn(g.n * g.cIn * 256),
        randn(g.cOut * g.cIn * 9),
        null,
        g,
      ),
      false,
    );
    assert.ok(y.every((v) => v === 3));
    assert.throws(
      () =>
        native.conv2dReluMaxPool2dForward(
          new Float32Array(3),
          new Int32Array(pooled),
          randn(g.n * g.cIn * 256),
          randn(g.cOut * g.cIn * 9),
          null,
          g,
        ),
      {
        name: "RangeError",
        message: `Expected y of length ${pooled} but received length 3`,
      },
    );
  } finally {
    native.setConvAlgorithm("auto");
  }
});

test("the pooled few-taps forward (a grayscale first layer) equals conv2d (ReLU) then max-pool, values and argmax, on 1-3 threads", () => {
  const cases = [
    convGeometry(3, 1, 13, 11, 5, 3, 1, 1), // odd sizes: the last conv row and column are dropped by the pool
    convGeometry(2, 1, 12, 150, 7, 3, 1, 1), // 150 columns: 128- and 16-pixel blocks and a tail of 6
    convGeometry(1, 1, 9, 40, 16, 3, 1, 0), // no padding, batch 1
    convGeometry(4, 1, 10, 10, 3, 4, 1, 1), // a 4x4 kernel: 16 taps, the most the kernel takes
    convGeometry(2, 1, 24, 5, 2, 3, 1, 1), // 5 columns: two windows and a dropped column per row
  ];
  for (const g of cases)
    for (const [withBias, poisoned] of [
      [true, false],
      [false, false],
      [true, true],
    ]) {
      const label = `${convLabel(g)}${withBias ? "" : ", no bias"}${poisoned ? ", a NaN input" : ""}`;
      const x = randn(g.n * g.cIn * g.h * g.w);
      if (poisoned) x[5] = Number.NaN;
      const w = randn(g.cOut * g.kh * g.kw);
      const bias = withBias ? randn(g.cOut) : null;
      const pg = maxPool2dGeometry([g.n, g.cOut, g.outH, g.outW], { kernelSize: 2 });
      const pooled = g.n * g.cOut * pg.outH * pg.outW;
      const conv = new Float32Array(g.n * g.cOut * g.outH * g.outW);
      native.conv2dForward(conv, x, w, bias, g, true);
      const [yN, aN] = [new Float32Array(pooled), new Int32Array(pooled)];
      native.maxPool2dForward(yN, aN, conv, pg);
      for (const threads of [1, 2, 3]) {
        native.setNumThreads(threads);
        const [y, argmax] = [randn(pooled), new Int32Array(pooled).fill(-7)];
        assert.equal(native.conv2dReluMaxPool2dForward(y, argmax, x, w, bias, g), true, label);
        assert.deepEqual(y, yN, `values ${label}, ${threads} threads`);
        assert.deepEqual(argmax, aN, `argmax ${label}, ${threads} threads`);
      }
      native.setNumThreads(2);
      if (poisoned) continue;
      const convR = new Float32Array(conv.length);
      ref.conv2dForward(convR, x, w, bias, g, true);
      const [yR, aR] = [new Float32Array(pooled), new Int32Array(pooled)];
      ref.maxPool2dForward(yR, aR, convR, pg);
      close(yN, yR, `reference ${label}`);
    }
});

test("the few-taps weight gradient from the pooled gradient equals max-pool backward then conv2d's, on 1-3 threads", () => {
  const cases = [
    // Batches of 6 and 12: split over 1, 2 and 3 threads alike (the kernel runs where conv2d's would).
    convGeometry(6, 1, 13, 11, 5, 3, 1, 1), // odd sizes: the dropped last row and column get no gradient
    convGeometry(6, 1, 40, 150, 7, 3, 1, 1), // 150 columns: 512-pixel chunks split rows and windows
    convGeometry(12, 1, 9, 40, 16, 3, 1, 0), // no padding
    convGeometry(6, 1, 10, 10, 3, 4, 1, 1), // a 4x4 kernel: 16 taps
    convGeometry(6, 1, 24, 5, 2, 3, 1, 1),
  ];
  for (const g of cases)
    for (const [withBias, masked] of [
      [true, true],
      [false, true],
      [true, false],
    ]) {
      const label = `${convLabel(g)}${withBias ? "" : ", no bias"}${masked ? "" : ", no ReLU mask"}`;
      const x = randn(g.n * g.cIn * g.h * g.w);
      const w = randn(g.cOut * g.kh * g.kw);
      const pg = maxPool2dGeometry([g.n, g.cOut, g.outH, g.outW], { kernelSize: 2 });
      const pooled = g.n * g.cOut * pg.outH * pg.outW;
      const [y, argmax] = [new Float32Array(pooled), new Int32Array(pooled)];
      assert.equal(native.conv2dReluMaxPool2dForward(y, argmax, x, w, randn(g.cOut), g), true, label);
      const dy = randn(pooled);
      const reluY = masked ? y : null;
      const dconv = new Float32Array(g.n * g.cOut * g.outH * g.outW);
      native.maxPool2dBackward(dconv, dy, argmax, pg, reluY);
      for (const threads of [1, 2, 3]) {
        native.setNumThreads(threads);
        const [dwN, dbN] = [new Float32Array(w.length), withBias ? new Float32Array(g.cOut) : null];
        native.conv2dBackwardWeight(dwN, dbN, dconv, x, g);
        const [dw, db] = [randn(w.length), withBias ? randn(g.cOut) : null];
        assert.equal(native.conv2dReluMaxPool2dBackwardWeight(dw, db, dy, argmax, reluY, x, g), true, label);
        assert.deepEqual(dw, dwN, `dw ${label}, ${threads} threads`);
        assert.deepEqual(db, dbN, `db ${label}, ${threads} threads`);
        if (threads === 2) {
          const [dwR, dbR] = [new Float32Array(w.length), new Float32Array(g.cOut)];
          const dconvR = new Float32Array(dconv.length);
          ref.maxPool2dBackward(dconvR, dy, argmax, pg, reluY);
          ref.conv2dBackwardWeight(dwR, dbR, dconvR, x, g);
          close(dw, dwR, `reference dw ${label}`, 1e-4);
          if (db) close(db, dbR, `reference db ${label}`, 1e-4);
        }
      }
      native.setNumThreads(2);
    }
  // Other kernels answer false and write nothing.
  const g = convGeometry(2, 4, 12, 12, 5, 3, 1, 1);
  const pooled = g.n * g.cOut * 36;
  const dw = new Float32Array(g.cOut * g.cIn * 9).fill(3);
  assert.equal(
    native.conv2dReluMaxPool2dBackwardWeight(
      dw,
      null,
      randn(pooled),
      new Int32Array(pooled),
      null,
      randn(g.n * g.cIn * 144),
      g,
    ),
    false,
  );
  assert.ok(dw.every((v) => v === 3));
  assert.throws(
    () =>
      native.conv2dReluMaxPool2dBackwardWeight(
        dw,
        null,
        randn(3),
        new Int32Array(pooled),
        null,
        randn(g.n * g.cIn * 144),
        g,
      ),
    { name: "RangeError", message: `Expected dy of length ${pooled} but received length 3` },
  );
});

test("the conv bias gradient is the same bit for bit on 1, 2 and 3 threads (per-image sums, then summed in image order)", () => {
  // Direct (1 input channel), im2col + GEMM and Winograd-eligible shapes, batches that do and do not split evenly.
  for (const g of [
    convGeometry(6, 1, 20, 20, 8, 3, 1, 1),
    convGeometry(5, 9, 12, 12, 17, 3, 1, 1),
    convGeometry(4, 16, 16, 16, 16, 3, 1, 1),
  ]) {
    const x = randn(g.n * g.cIn * g.h * g.w);
    const dy = randn(g.n * g.cOut * g.outH * g.outW);
    const results = [1, 2, 3].map((t) => {
      native.setNumThreads(t);
      const dw = new Float32Array(g.cOut * g.cIn * g.kh * g.kw);
      const db = new Float32Array(g.cOut);
      native.conv2dBackwardWeight(dw, db, dy, x, g);
      return { dw, db };
    });
    native.setNumThreads(2);
    const dwR = new Float32Array(g.cOut * g.cIn * g.kh * g.kw);
    const dbR = new Float32Array(g.cOut);
    ref.conv2dBackwardWeight(dwR, dbR, dy, x, g);
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r.db, results[0].db, `db on ${i + 1} threads, n=${g.n} cIn=${g.cIn}`);
      close(r.db, dbR, `db n=${g.n} cIn=${g.cIn}`, 1e-5);
      close(r.dw, dwR, `dw on ${i + 1} threads, n=${g.n} cIn=${g.cIn}`, 1e-4);
    }
  }
});

test("conv2d handles empty batches and zero channels", () => {
  for (const g of [convGeometry(0, 3, 5, 5, 4, 3, 1, 1), convGeometry(2, 0, 5, 5, 4, 3, 1, 1)]) {
    const wLen = g.cOut * g.cIn * g.kh * g.kw;
    const y = randn(g.n * g.cOut * g.outH * g.outW);
    const yR = new Float32Array(y.length);
    native.conv2dForward(
      y,
      new Float32Array(g.n * g.cIn * g.h * g.w),
      new Float32Array(wLen),
      null,
      g,
      false,
    );
    ref.conv2dForward(yR, new Float32Array(g.n * g.cIn * g.h * g.w), new Float32Array(wLen), null, g, false);
    close(y, yR, "empty forward");
    const dw = randn(wLen);
    const db = randn(g.cOut);
    native.conv2dBackwardWeight(
      dw,
      db,
      new Float32Array(y.length),
      new Float32Array(g.n * g.cIn * g.h * g.w),
      g,
    );
    assert.ok(dw.every((v) => v === 0) && db.every((v) => v === 0));
  }
});

test("max-pool forward/backward match the reference (padding, NaN, odd sizes)", () => {
  const cases: Pool2dGeometry[] = [
    { n: 2, c: 3, h: 8, w: 8, kh: 2, kw: 2, strideH: 2, strideW: 2, padH: 0, padW: 0, outH: 4, outW: 4 },
    { n: 1, c: 5, h: 7, w: 9, kh: 3, kw: 3, strideH: 2, strideW: 2, padH: 1, padW: 1, outH: 4, outW: 5 },
    { n: 3, c: 2, h: 5, w: 5, kh: 3, kw: 2, strideH: 1, strideW: 2, padH: 1, padW: 0, outH: 5, outW: 2 },
    { n: 1, c: 1, h: 1, w: 1, kh: 1, kw: 1, strideH: 1, strideW: 1, padH: 0, padW: 0, outH: 1, outW: 1 },
    { n: 2, c: 3, h: 9, w: 7, kh: 2, kw: 2, strideH: 2, strideW: 2, padH: 0, padW: 0, outH: 4, outW: 3 },
    { n: 3, c: 5, h: 18, w: 37, kh: 2, kw: 2, strideH: 2, strideW: 2, padH: 0, padW: 0, outH: 9, outW: 18 },
    // Two 16-window vectors (the avx512 level) and an 8-window one (avx2) plus a tail, an odd height.
    { n: 2, c: 3, h: 15, w: 71, kh: 2, kw: 2, strideH: 2, strideW: 2, padH: 0, padW: 0, outH: 7, outW: 35 },
    // Fewer windows than fit (a caller's geometry): rows and columns outside every window get no gradient.
    { n: 1, c: 2, h: 8, w: 10, kh: 2, kw: 2, strideH: 2, strideW: 2, padH: 0, padW: 0, outH: 3, outW: 2 },
  ];
  for (const g of cases) {
    const x = randn(g.n * g.c * g.h * g.w);
    x[3] = Number.NaN;
    x[x.length - 1] = Number.NaN;
    // Many NaNs (in either row of a window, or both) exercise the tie rules of the 2x2 fast path.
    for (let i = 0; i < x.length; i += 1 + Math.floor(rand() * 6)) x[i] = Number.NaN;
    const yLen = g.n * g.c * g.outH * g.outW;
    const [yN, yR] = [new Float32Array(yLen), new Float32Array(yLen)];
    const [aN, aR] = [new Int32Array(yLen), new Int32Array(yLen)];
    native.maxPool2dForward(yN, aN, x, g);
    ref.maxPool2dForward(yR, aR, x, g);
    close(yN, yR, "max-pool forward", 0);
    assert.deepEqual(aN, aR);
    const dy = randn(yLen);
    const [dxN, dxR] = [randn(x.length), new Float32Array(x.length)];
    native.maxPool2dBackward(dxN, dy, aN, g);
    ref.maxPool2dBackward(dxR, dy, aR, g);
    close(dxN, dxR, "max-pool backward", 0);
    // Garbage indices are ignored, never followed.
    const bad = aN.map((_v, i) => (i % 2 ? 1e9 : -7));
    native.maxPool2dBackward(dxN, dy, bad, g);
    ref.maxPool2dBackward(dxR, dy, bad, g);
    close(dxN, dxR, "max-pool backward with bad indices", 0);
    // An index inside the plane but outside its own window (the 2x2 kernel's block writes do not apply).
    if (yLen > 1) {
      const moved = aN.slice();
      moved[0] = aN[1];
      native.maxPool2dBackward(dxN, dy, moved, g);
      ref.maxPool2dBackward(dxR, dy, moved, g);
      close(dxN, dxR, "max-pool backward with an index in another window", 0);
    }
  }
});

test("ReLU's backward fused into max-pool and conv input gradients equals the separate pass, on both backends", () => {
  // x is a ReLU output (zeros included, so whole windows can be 0); the fused kernels must equal
  // reluBackward applied to the plain gradient, bit for bit.
  const pools: Pool2dGeometry[] = [
    { n: 2, c: 3, h: 9, w: 7, kh: 2, kw: 2, strideH: 2, strideW: 2, padH: 0, padW: 0, outH: 4, outW: 3 },
    { n: 3, c: 2, h: 7, w: 7, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1, outH: 7, outW: 7 },
  ];
  const reluOf = (len: number) => randn(len).map((v) => (v < 0.3 ? 0 : v));
  for (const g of pools) {
    const x = reluOf(g.n * g.c * g.h * g.w);
    const yLen = g.n * g.c * g.outH * g.outW;
    const y = new Float32Array(yLen);
    const argmax = new Int32Array(yLen);
    ref.maxPool2dForward(y, argmax, x, g);
    assert.ok(
      y.some((v) => v === 0),
      "some window is all zeros",
    );
    const dy = randn(yLen);
    const expected = new Float32Array(x.length);
    ref.maxPool2dBackward(expected, dy, argmax, g);
    ref.reluBackward(expected, expected, x);
    for (const be of [native, ref]) {
      const dx = randn(x.length);
      be.maxPool2dBackward(dx, dy, argmax, g, y);
      close(dx, expected, `${be.name} max-pool backward with the ReLU mask`, 0);
    }
  }
  native.setNumThreads(2);
  // Batch 4 splits the batch over the threads; batch 3 runs one image at a time (threaded inside).
  for (const g of [
    convGeometry(4, 6, 9, 8, 5, 3, 1, 1),
    convGeometry(3, 6, 9, 8, 5, 3, 1, 1),
    convGeometry(4, 5, 6, 6, 7, 1, 1, 0),
  ]) {
    const x = reluOf(g.n * g.cIn * g.h * g.w);
    const w = randn(g.cOut * g.cIn * g.kh * g.kw);
    const dy = randn(g.n * g.cOut * g.outH * g.outW);
    for (const be of [native, ref]) {
      const plain = new Float32Array(x.length);
      be.conv2dBackwardInput(plain, dy, w, g);
      be.reluBackward(plain, plain, x);
      const fused = randn(x.length);
      be.conv2dBackwardInput(fused, dy, w, g, x);
      close(fused, plain, `${be.name} conv input gradient with the ReLU mask`, 0);
    }
  }
  assert.throws(
    () =>
      native.maxPool2dBackward(
        new Float32Array(378),
        new Float32Array(72),
        new Int32Array(72),
        pools[0],
        new Float32Array(3),
      ),
    {
      name: "RangeError",
      message: "Expected reluOut of length 72 but received length 3",
    },
  );
  assert.throws(
    () =>
      addon.conv2dBackwardInput(
        new Float32Array(4 * 6 * 72),
        new Float32Array(4 * 5 * 72),
        new Float32Array(5 * 54),
        convGeometry(4, 6, 9, 8, 5, 3, 1, 1),
        new Float32Array(2),
      ),
    {
      name: "RangeError",
      message: "Expected reluMask of length 1728 but received length 2",
    },
  );
});

test("element-wise ops match the reference, small and large (threaded), in place too", () => {
  for (const len of [0, 1, 17, 100_003]) {
    const x = randn(len);
    if (len > 2) x[1] = Number.NaN;
    const dy = randn(len);
    const mask = randn(len);
    const pairs: [string, (b: NativeBackend | ReferenceBackend, out: Float32Array) => void][] = [
      ["relu", (b, out) => b.relu(out, x)],
      ["reluBackward", (b, out) => b.reluBackward(out, dy, x)],
      ["mul", (b, out) => b.mul(out, x, mask)],
      [
        "addInPlace",
        (b, out) => {
          out.set(dy);
          b.addInPlace(out, mask);
        },
      ],
    ];
    for (const [name, run] of pairs) {
      const [oN, oR] = [randn(len), new Float32Array(len)];
      run(native, oN);
      run(ref, oR);
      close(oN, oR, `${name} len ${len}`, 0);
    }
    const inPlace = x.slice();
    native.relu(inPlace, inPlace);
    const expected = new Float32Array(len);
    ref.relu(expected, x);
    close(inPlace, expected, "relu in place", 0);
  }
  for (const [rows, cols] of [
    [3, 5],
    [1000, 77],
  ]) {
    const y = randn(rows * cols);
    const bias = randn(cols);
    const [yN, yR] = [y.slice(), y.slice()];
    native.addRowBias(yN, bias, rows, cols);
    ref.addRowBias(yR, bias, rows, cols);
    close(yN, yR, "addRowBias", 0);
  }
});

test("softmax cross-entropy matches the reference", () => {
  for (const [n, c] of [
    [1, 1],
    [4, 10],
    [33, 7],
  ]) {
    const logits = randn(n * c).map((v) => v * 30);
    const targets = Int32Array.from({ length: n }, () => Math.floor(rand() * c));
    const [dN, dR] = [new Float32Array(n * c), new Float32Array(n * c)];
    const lossN = native.softmaxCrossEntropy(dN, logits, targets, n, c);
    const lossR = ref.softmaxCrossEntropy(dR, logits, targets, n, c);
    assert.ok(Math.abs(lossN - lossR) <= 1e-9 * (1 + Math.abs(lossR)), `loss ${lossN} vs ${lossR}`);
    close(dN, dR, "dlogits", 1e-7);
  }
});

test("batch norm forward and backward match the reference", () => {
  for (const [n, c, hw] of [
    [1, 1, 1],
    [2, 3, 5],
    [5, 9, 49],
    [3, 17, 1],
    [2, 3, 600], // rows of several 256-value blocks with a tail
    [1, 2, 4099],
  ]) {
    const x = randn(n * c * hw).map((v) => v * 3 + 1);
    // A mean far larger than the spread (300 +- 0.05) must not lose the variance to cancellation.
    const far = x.map((v) => 300 + v / 60);
    const gamma = randn(c);
    const beta = randn(c);
    const out = () => [new Float32Array(n * c * hw), new Float32Array(c), new Float32Array(c)] as const;
    const [yN, mN, iN] = out();
    const [yR, mR, iR] = out();
    native.batchNormForwardTrain(yN, mN, iN, x, gamma, beta, n, c, hw, 1e-5);
    ref.batchNormForwardTrain(yR, mR, iR, x, gamma, beta, n, c, hw, 1e-5);
    close(yN, yR, "bn y", 1e-5);
    close(mN, mR, "bn mean", 1e-6);
    close(iN, iR, "bn invStd", 1e-6);
    if (n * hw > 1) {
      native.batchNormForwardTrain(yN, mN, iN, far, gamma, beta, n, c, hw, 1e-5);
      ref.batchNormForwardTrain(yR, mR, iR, far, gamma, beta, n, c, hw, 1e-5);
      for (let ch = 0; ch < c; ch++)
        assert.ok(
          Math.abs(iN[ch] / iR[ch] - 1) < 1e-3,
          `bn invStd with mean 300, std 0.05 (${n}x${c}x${hw}): ${iN[ch]} vs ${iR[ch]}`,
        );
      close(yN, yR, "bn y with mean 300", 1e-2);
    }
    const dy = randn(n * c * hw);
    const [dxN, dgN, dbN] = out();
    const [dxR, dgR, dbR] = out();
    native.batchNormBackward(dxN, dgN, dbN, dy, x, gamma, mR, iR, n, c, hw);
    ref.batchNormBackward(dxR, dgR, dbR, dy, x, gamma, mR, iR, n, c, hw);
    close(dxN, dxR, "bn dx", 1e-5);
    close(dgN, dgR, "bn dgamma", 1e-5);
    close(dbN, dbR, "bn dbeta", 1e-5);
    // Fixed statistics (inference): a per-channel scale and shift, also in place.
    const [aN, aR] = [new Float32Array(n * c * hw), new Float32Array(n * c * hw)];
    native.channelAffine(aN, x, gamma, beta, n, c, hw);
    ref.channelAffine(aR, x, gamma, beta, n, c, hw);
    close(aN, aR, "channel affine", 1e-6);
    const inPlace = x.slice();
    native.channelAffine(inPlace, inPlace, gamma, beta, n, c, hw);
    close(inPlace, aR, "channel affine in place", 1e-6);
    // With the fused ReLU (the normalised values straddle 0).
    native.channelAffine(aN, x, gamma, beta, n, c, hw, true);
    ref.channelAffine(aR, x, gamma, beta, n, c, hw, true);
    close(aN, aR, "channel affine + relu", 1e-6);
    native.batchNormForwardTrain(yN, mN, iN, x, gamma, beta, n, c, hw, 1e-5, true);
    ref.batchNormForwardTrain(yR, mR, iR, x, gamma, beta, n, c, hw, 1e-5, true);
    close(yN, yR, "bn + relu y", 1e-5);
    assert.ok(
      yN.every((v) => v >= 0),
      "bn + relu wrote a negative value",
    );
  }
});

test("sgd step matches the reference (plain, momentum, dampening, Nesterov, weight decay)", () => {
  const variants: SgdOptions[] = [
    { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, firstStep: true },
    { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 5e-4, nesterov: false, firstStep: true },
    { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 5e-4, nesterov: false, firstStep: false },
    { lr: 0.01, momentum: 0.8, dampening: 0, weightDecay: 0, nesterov: true, firstStep: false },
  ];
  for (const len of [7, 70_001])
    for (const o of variants) {
      const param = randn(len);
      const grad = randn(len);
      const buf = randn(len);
      const [pN, pR, bN, bR] = [param.slice(), param.slice(), buf.slice(), buf.slice()];
      native.sgdStep(pN, grad, o.momentum ? bN : null, o);
      ref.sgdStep(pR, grad, o.momentum ? bR : null, o);
      close(pN, pR, "sgd param", 0);
      close(bN, bR, "sgd momentum buffer", 0);
    }
});

test("the TypeScript wrapper rejects wrong lengths and sizes with the reference's messages", () => {
  const g = convGeometry(2, 3, 5, 5, 4, 3, 1, 1);
  const f = (n: number) => new Float32Array(n);
  assert.throws(() => native.conv2dForward(f(199), f(150), f(108), null, g, false), {
    name: "RangeError",
    message: "Expected y of length 200 but received length 199",
  });
  assert.throws(() => native.conv2dBackwardWeight(f(108), f(3), f(200), f(150), g), {
    name: "RangeError",
    message: "Expected db of length 4 but received length 3",
  });
  assert.throws(() => native.gemm(f(6), f(6), f(8), 2, 3, 3, false, false, 0), {
    name: "RangeError",
    message: "Expected B of length 9 but received length 8",
  });
  assert.throws(() => native.gemm(f(6), f(6), f(9), -2, 3, 3, false, false, 0), {
    name: "RangeError",
    message: "Expected m to be an integer >= 0 but received -2",
  });
  assert.throws(() => native.conv2dBackwardInput(f(150), f(200), f(108), { ...g, strideH: 0 }), {
    name: "RangeError",
    message: "Expected g.strideH to be an integer >= 1 but received 0",
  });
  assert.throws(() => native.setNumThreads(0), {
    name: "RangeError",
    message: "Expected the thread count to be an integer >= 1 but received 0",
  });
});

test("the C++ binding guards every argument itself (types, lengths, sizes, overflow)", () => {
  const f = (n: number) => new Float32Array(n);
  const g = convGeometry(2, 3, 5, 5, 4, 3, 1, 1);
  const cases: [() => unknown, string, string][] = [
    [
      () => addon.gemm(new Float64Array(6) as unknown as Float32Array, f(6), f(9), 2, 3, 3, false, false, 0),
      "TypeError",
      "Expected C to be a Float32Array but received Float64Array",
    ],
    [
      () => addon.gemm(f(6), f(6), f(8), 2, 3, 3, false, false, 0),
      "RangeError",
      "Expected B of length 9 but received length 8",
    ],
    [
      () => addon.gemm(f(6), f(6), f(9), -1, 3, 3, false, false, 0),
      "RangeError",
      "Expected m to be an integer in [0, 2147483647] but received -1",
    ],
    [
      () => addon.gemm(f(6), f(6), f(9), 2.5, 3, 3, false, false, 0),
      "RangeError",
      "Expected m to be an integer in [0, 2147483647] but received 2.5",
    ],
    [
      () => addon.gemm(f(6), f(6), f(9), 2, 3, 3, false, false, 2),
      "RangeError",
      "Expected beta to be 0 or 1 but received 2",
    ],
    [
      () => (addon.gemm as (...a: unknown[]) => void)(f(6), f(6)),
      "TypeError",
      "Expected 9 arguments but received 2",
    ],
    [
      () => addon.gemm(f(0), f(0), f(0), 2147483647, 2147483647, 2147483647, false, false, 0),
      "RangeError",
      "Expected the size of C to fit in memory but its dimensions overflow",
    ],
    [
      () => addon.conv2dForward(f(200), f(150), f(108), null, { ...g, cIn: undefined } as never, false),
      "TypeError",
      "Expected g.cIn to be an integer but received undefined",
    ],
    [
      () => addon.conv2dForward(f(200), f(150), f(108), null, { ...g, strideW: 0 }, false),
      "RangeError",
      "Expected g.strideW to be an integer in [1, 2147483647] but received 0",
    ],
    [
      () => addon.conv2dForward(f(200), f(151), f(108), null, g, false),
      "RangeError",
      "Expected x of length 150 but received length 151",
    ],
    [
      () => addon.conv2dForward(f(200), f(150), f(108), f(5), g, false),
      "RangeError",
      "Expected bias of length 4 but received length 5",
    ],
    [
      () =>
        addon.conv2dForward(
          f(0),
          f(0),
          f(0),
          null,
          { ...g, n: 0, cOut: 0, kh: 1000, kw: 1000, outH: 1000, outW: 1000 },
          false,
        ),
      "RangeError",
      "Expected an im2col workspace of at most 2^28 floats (1 GiB) but this geometry needs 3000000000000; hint: check kh, kw, outH and outW",
    ],
    [
      () =>
        addon.maxPool2dForward(f(4), f(4) as unknown as Int32Array, f(16), {
          n: 1,
          c: 1,
          h: 4,
          w: 4,
          kh: 2,
          kw: 2,
          strideH: 2,
          strideW: 2,
          padH: 0,
          padW: 0,
          outH: 2,
          outW: 2,
        }),
      "TypeError",
      "Expected argmax to be a Int32Array but received Float32Array",
    ],
    [
      () => addon.relu(f(3), [1, 2, 3] as unknown as Float32Array),
      "TypeError",
      "Expected x to be a Float32Array but received an Array",
    ],
    [
      () => addon.reluBackward(f(3), f(2), f(3)),
      "RangeError",
      "Expected dy of length 3 but received length 2",
    ],
    [
      () => addon.addRowBias(f(6), f(3), 2, -3),
      "RangeError",
      "Expected cols to be an integer in [0, 2147483647] but received -3",
    ],
    [
      () => addon.softmaxCrossEntropy(f(6), f(6), Int32Array.from([0, 3]), 2, 3),
      "RangeError",
      "Expected target class in [0, 3) but received 3",
    ],
    [
      () =>
        addon.sgdStep(f(3), f(3), null, {
          lr: 0.1,
          momentum: 0.9,
          dampening: 0,
          weightDecay: 0,
          nesterov: false,
          firstStep: true,
        }),
      "TypeError",
      "Expected a momentum buffer when momentum > 0",
    ],
    [
      () => addon.setNumThreads(0),
      "RangeError",
      "Expected the thread count to be an integer in [1, 2147483647] but received 0",
    ],
    [
      () => addon.setNumThreads(1000),
      "RangeError",
      "Expected the thread count to be at most 256 but received 1000",
    ],
  ];
  for (const [run, name, message] of cases) {
    assert.throws(run, { name, message });
  }
  // A rejected call leaves the addon usable.
  assert.equal(addon.numThreads(), native.numThreads());
});

test("JS worker threads can call the addon while the main thread does (the pool is shared safely)", async () => {
  const { Worker } = await import("node:worker_threads");
  const { addonPaths } = await import("../src/backend/native.js");
  const path = addonPaths.find((p) => existsSync(p));
  // Each worker checks 10 GEMMs against a plain triple loop and reports the largest difference.
  const source = `
    const { parentPort, workerData } = require("node:worker_threads");
    const addon = require(workerData);
    const n = 128; // large enough (4 MFLOP) for gemm to use the thread pool
    let worst = 0;
    for (let it = 0; it < 10; it++) {
      const a = Float32Array.from({ length: n * n }, () => Math.random() - 0.5);
      const b = Float32Array.from({ length: n * n }, () => Math.random() - 0.5);
      const c = new Float32Array(n * n);
      addon.gemm(c, a, b, n, n, n, false, false, 0);
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < n; p++) s += a[i * n + p] * b[p * n + j];
          worst = Math.max(worst, Math.abs(s - c[i * n + j]));
        }
    }
    parentPort.postMessage(worst);`;
  const workers = [0, 1].map(
    () =>
      new Promise<number>((resolve, reject) => {
        const w = new Worker(source, { eval: true, workerData: path });
        w.on("message", resolve);
        w.on("error", reject);
      }),
  );
  const g = convGeometry(4, 16, 20, 20, 16, 3, 1, 1);
  for (let i = 0; i < 5; i++) checkConv(g);
  for (const worst of await Promise.all(workers))
    assert.ok(worst < 1e-4, `worker GEMM max difference ${worst}`);
});

test("fused ReLU backward through the autograd equals the unfused graph, also when a ReLU output has two consumers", async () => {
  const { conv2d, maxPool2d, reshape, mul, sum, add } = await import("../src/ops/index.js");
  const { Tensor } = await import("../src/tensor.js");
  const { setBackend } = await import("../src/backend/index.js");
  for (const name of ["native", "reference"] as const) {
    setBackend(name);
    const x = new Tensor(randn(4 * 3 * 10 * 10), [4, 3, 10, 10]);
    const w1 = randn(6 * 3 * 9);
    const w2 = randn(5 * 6 * 9);
    const w3 = randn(4 * 5 * 9);
    const r1 = randn(4 * 6 * 5 * 5);
    const r2 = randn(4 * 6 * 10 * 10);
    // `through` = reshape to the same shape: a pass-through op that hides the ReLU from its consumer.
    const run = (through: boolean, twoConsumers: boolean) => {
      const ws = [w1, w2, w3].map(
        (w, i) =>
          new Tensor(
            w.slice(),
            [
              [6, 3, 3, 3],
              [5, 6, 3, 3],
              [4, 5, 3, 3],
            ][i],
            { requiresGrad: true },
          ),
      );
      const hide = (t: InstanceType<typeof Tensor>) => (through ? reshape(t, [...t.shape]) : t);
      const y1 = conv2d(x, ws[0], null, { padding: 1, relu: true });
      const p = maxPool2d(hide(y1), { kernelSize: 2 });
      const y2 = conv2d(hide(conv2d(p, ws[1], null, { padding: 1, relu: true })), ws[2], null, {
        padding: 1,
      });
      let loss = sum(mul(y2, new Tensor(r1.subarray(0, y2.size).slice(), y2.shape)));
      if (twoConsumers) loss = add(loss, sum(mul(y1, new Tensor(r2, y1.shape))));
      loss.backward();
      return ws.map((w) => w.grad!.data);
    };
    for (const twoConsumers of [false, true]) {
      const fused = run(false, twoConsumers);
      const plain = run(true, twoConsumers);
      for (let i = 0; i < 3; i++)
        close(fused[i], plain[i], `${name} dw${i + 1} (two consumers: ${twoConsumers})`, 0);
    }
  }
  setBackend("native");
});

test("fused conv2d + ReLU + max-pool equals the three ops, in any chunking and with the pooled epilogue, on both backends", async () => {
  const { conv2d, conv2dReluMaxPool2d, maxPool2d, mul, relu, sum } = await import("../src/ops/index.js");
  const { Tensor } = await import("../src/tensor.js");
  const { setBackend } = await import("../src/backend/index.js");
  // Native runs under each forced Winograd tile size too, where the default chunking becomes the kernel
  // that pools in its output transform (forward and, through its argmax, backward).
  for (const [name, algorithm] of [
    ["native", "auto"],
    ["native", "winograd"],
    ["native", "winograd4"],
    ["reference", "auto"],
  ] as const) {
    setBackend(name);
    native.setConvAlgorithm(algorithm);
    for (const [n, cIn, h, w, cOut, pad] of [
      [5, 3, 12, 10, 6, 1],
      [3, 1, 9, 9, 4, 1],
      [4, 5, 8, 8, 7, 0],
    ]) {
      const xs = randn(n * cIn * h * w);
      const ws = randn(cOut * cIn * 9);
      const bs = randn(cOut);
      const run = (chunk: number | null | undefined) => {
        // x is the output of a ReLU, so the input gradient's fused mask is exercised too.
        const x0 = new Tensor(xs.slice(), [n, cIn, h, w], { requiresGrad: true });
        const x = relu(x0);
        const wt = new Tensor(ws.slice(), [cOut, cIn, 3, 3], { requiresGrad: true });
        const bt = new Tensor(bs.slice(), [cOut], { requiresGrad: true });
        const y =
          chunk === null
            ? maxPool2d(conv2d(x, wt, bt, { padding: pad, relu: true }), { kernelSize: 2 })
            : conv2dReluMaxPool2d(x, wt, bt, { padding: pad }, { kernelSize: 2 }, chunk);
        const r = new Tensor(randnSeeded(y.size), y.shape);
        sum(mul(y, r)).backward();
        return [y.data, x0.grad!.data, wt.grad!.data, bt.grad!.data];
      };
      const plain = run(null);
      for (const chunk of [1, 2, n, undefined]) {
        const fused = run(chunk);
        // A chunk's image count can pick another kernel (per-image vs batch-split): float rounding only.
        const label = `${name} ${algorithm} (chunk ${chunk ?? "default"})`;
        close(fused[0], plain[0], `y ${label}`, name === "reference" ? 0 : 1e-5);
        close(fused[1], plain[1], `dx ${label}`, name === "reference" ? 0 : 1e-5);
        close(fused[2], plain[2], `dw ${label}`, 1e-5);
        close(fused[3], plain[3], `db ${label}`, 1e-5);
      }
    }
  }
  native.setConvAlgorithm("auto");
  setBackend("native");
});

/** The same values on every call (the upstream gradient must not differ between the runs compared). */
function randnSeeded(len: number): Float32Array {
  const r = rng(99);
  return Float32Array.from({ length: len }, () => r() * 2 - 1);
}
