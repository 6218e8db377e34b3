// Finite-difference gradient checks for every op with a backward.
import { test } from "node:test";
import { setBackend } from "../src/backend/index.js";
import * as F from "../src/ops/index.js";
import { Generator } from "../src/rng.js";
import type { Tensor } from "../src/tensor.js";
import { gradcheck, randomTensor } from "./helpers.js";

setBackend("reference");

const convCases = [
  { x: [2, 3, 5, 6], w: [4, 3, 3, 3], stride: 1, padding: 1, bias: true },
  { x: [1, 2, 7, 7], w: [3, 2, 3, 3], stride: 2, padding: 0, bias: false },
  { x: [2, 1, 4, 5], w: [2, 1, 5, 5], stride: 1, padding: 2, bias: true },
  { x: [1, 3, 6, 5], w: [2, 3, 1, 1], stride: 2, padding: 0, bias: true },
  {
    x: [1, 2, 5, 5],
    w: [3, 2, 3, 2],
    stride: [2, 1] as [number, number],
    padding: [1, 0] as [number, number],
    bias: true,
  },
];

for (const [i, c] of convCases.entries())
  test(`conv2d gradient, case ${i}: x ${c.x} w ${c.w} stride ${c.stride} padding ${c.padding}`, (t) => {
    const x = randomTensor(c.x, 1 + i);
    const w = randomTensor(c.w, 100 + i);
    const inputs = c.bias ? [x, w, randomTensor([c.w[0]], 200 + i)] : [x, w];
    const worst = gradcheck(
      (a, b, bias) => F.conv2d(a, b, bias ?? null, { stride: c.stride, padding: c.padding }),
      inputs,
    );
    t.diagnostic(`max |analytic - numeric| = ${worst.toExponential(2)}`);
  });

test("conv2d with fused relu gradient", () => {
  // Bias pushed away from the kink so finite differences do not straddle 0.
  const x = randomTensor([1, 2, 4, 4], 3);
  const w = randomTensor([3, 2, 3, 3], 4);
  const b = randomTensor([3], 5, 0.5, 1);
  gradcheck((a, c, d) => F.conv2d(a, c, d, { padding: 1, relu: true }), [x, w, b], { eps: 1e-3 });
});

test("fused conv2d + relu + max_pool2d gradient, in uneven chunks", (t) => {
  // 3 images in chunks of 2 (the last chunk is short); bias pushed away from ReLU's kink.
  const x = randomTensor([3, 2, 6, 6], 21);
  const w = randomTensor([3, 2, 3, 3], 22);
  const b = randomTensor([3], 23, 0.5, 1);
  const worst = gradcheck(
    (a, c, d) => F.conv2dReluMaxPool2d(a, c, d, { padding: 1 }, { kernelSize: 2 }, 2),
    [x, w, b],
    { eps: 1e-3 },
  );
  t.diagnostic(`max |analytic - numeric| = ${worst.toExponential(2)}`);
});

/** Values spaced apart so no max-pool window has near-ties and relu has no value near 0. */
function spaced(shape: number[], seed: number): Tensor {
  const t = randomTensor(shape, seed);
  const perm = new Generator(seed).permutation(t.size);
  for (let i = 0; i < t.size; i++) t.data[i] = (perm[i] - t.size / 2 + 0.5) * 0.1;
  return t;
}

test("relu gradient", () => {
  gradcheck((a) => F.relu(a), [spaced([2, 3, 4], 1)]);
});

for (const o of [
  { kernelSize: 2, stride: 2, padding: 0, shape: [2, 2, 6, 6] },
  { kernelSize: 3, stride: 2, padding: 1, shape: [1, 3, 7, 5] },
  { kernelSize: 3, stride: 1, padding: 1, shape: [1, 2, 4, 4] },
  { kernelSize: 2, stride: 2, padding: 0, shape: [1, 1, 5, 5] },
])
  test(`max_pool2d gradient k${o.kernelSize} s${o.stride} p${o.padding} on ${o.shape}`, () => {
    gradcheck((a) => F.maxPool2d(a, o), [spaced(o.shape, 11)]);
  });

for (const [shape, out] of [
  [
    [1, 2, 9, 9],
    [7, 7],
  ],
  [
    [2, 1, 10, 13],
    [7, 7],
  ],
  [
    [1, 3, 5, 4],
    [1, 1],
  ],
  [
    [1, 1, 4, 4],
    [7, 7],
  ],
] as [number[], [number, number]][])
  test(`adaptive_avg_pool2d gradient ${shape} -> ${out}`, () => {
    gradcheck((a) => F.adaptiveAvgPool2d(a, out), [randomTensor(shape, 12)]);
  });

test("linear gradient (with and without bias) and matmul", () => {
  gradcheck(
    (x, w, b) => F.linear(x, w, b),
    [randomTensor([3, 5], 1), randomTensor([4, 5], 2), randomTensor([4], 3)],
  );
  gradcheck((x, w) => F.linear(x, w), [randomTensor([2, 3, 5], 4), randomTensor([2, 5], 5)]);
  gradcheck((a, b) => F.matmul(a, b), [randomTensor([3, 4], 6), randomTensor([4, 2], 7)]);
});

test("reshape and flatten gradients", () => {
  gradcheck((a) => F.reshape(a, [4, -1]), [randomTensor([2, 2, 3], 1)]);
  gradcheck((a) => F.flatten(a), [randomTensor([2, 3, 2, 2], 2)]);
});

test("dropout gradient (fixed mask via a re-seeded generator)", () => {
  gradcheck((a) => F.dropout(a, 0.3, true, new Generator(42)), [randomTensor([4, 5], 1)]);
});

test("add, sub, mul, sum and mean gradients", () => {
  const a = randomTensor([3, 4], 1);
  const b = randomTensor([3, 4], 2);
  gradcheck((x, y) => F.add(x, y), [a, b]);
  gradcheck((x, y) => F.sub(x, y), [a, b]);
  gradcheck((x, y) => F.mul(x, y), [a, b]);
  gradcheck((x) => F.mul(F.add(x, 0.5), 3), [a]);
  gradcheck((x) => F.sum(x), [a]);
  gradcheck((x) => F.mean(x), [a]);
  // The same tensor used twice: gradients from both uses accumulate.
  gradcheck((x) => F.mul(x, x), [a]);
});

test("log_softmax, nll_loss and cross_entropy gradients", () => {
  const logits = randomTensor([4, 5], 3, -3, 3);
  const targets = [0, 4, 2, 2];
  gradcheck((x) => F.logSoftmax(x), [logits]);
  gradcheck((x) => F.nllLoss(F.logSoftmax(x), targets), [logits]);
  gradcheck((x) => F.crossEntropy(x, targets), [logits]);
});

test("batch_norm gradients, training and evaluation", () => {
  const x = randomTensor([3, 2, 3, 2], 1, -2, 2);
  const gamma = randomTensor([2], 2, 0.5, 1.5);
  const beta = randomTensor([2], 3);
  gradcheck((a, g, b) => F.batchNorm(a, null, null, g, b, { training: true }), [x, gamma, beta], {
    eps: 1e-2,
  });
  const rm = randomTensor([2], 4, -0.5, 0.5, false);
  const rv = randomTensor([2], 5, 0.5, 2, false);
  gradcheck((a, g, b) => F.batchNorm(a, rm, rv, g, b, { training: false }), [x, gamma, beta]);
  // Fused with a ReLU (inputs away from the kink at 0 by construction of the finite differences' eps).
  gradcheck((a, g, b) => F.batchNorm(a, null, null, g, b, { training: true, relu: true }), [x, gamma, beta], {
    eps: 1e-2,
  });
  gradcheck((a, g, b) => F.batchNorm(a, rm, rv, g, b, { training: false, relu: true }), [x, gamma, beta]);
});
