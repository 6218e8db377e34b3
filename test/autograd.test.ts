// Tensors, the seeded RNG and the autograd engine's contract.
import assert from "node:assert/strict";
import { test } from "node:test";
import { noGrad } from "../src/autograd.js";
import { setBackend } from "../src/backend/index.js";
import * as F from "../src/ops/index.js";
import { Generator, manualSeed } from "../src/rng.js";
import { fromArray, ones, rand, randn, Tensor, zeros } from "../src/tensor.js";

setBackend("reference");

test("creation functions give the right shapes and values", () => {
  assert.deepEqual(zeros([2, 3]).shape, [2, 3]);
  assert.deepEqual(ones([2]).toArray(), [1, 1]);
  const t = fromArray([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  assert.deepEqual(t.shape, [2, 3]);
  assert.deepEqual(t.toArray(), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(fromArray([1, 2, 3, 4], [2, 2]).shape, [2, 2]);
  assert.equal(fromArray(3).item(), 3);
  assert.throws(() => fromArray([1, 2, 3], [2, 2]), /Expected 4 values for shape \[2, 2\] but received 3/);
  assert.throws(() => zeros([2, -1]), /Expected a shape of non-negative integers but received \[2, -1\]/);
  assert.throws(() => fromArray([[1, 2], [3]]), /rectangular/);
});

test("one seed fixes every random draw", () => {
  manualSeed(123);
  const a = [randn([5]).toArray(), rand([5]).toArray()];
  manualSeed(123);
  const b = [randn([5]).toArray(), rand([5]).toArray()];
  assert.deepEqual(a, b);
  manualSeed(124);
  assert.notDeepEqual(randn([5]).toArray(), a[0]);
});

test("generator state round-trips through JSON", () => {
  const g = new Generator(5);
  g.normal();
  const state = JSON.parse(JSON.stringify(g.getState()));
  const expected = [g.normal(), g.normal(), g.random()];
  const h = new Generator(0);
  h.setState(state);
  assert.deepEqual([h.normal(), h.normal(), h.random()], expected);
});

test("randn has mean 0 and variance 1; permutation is a permutation", () => {
  manualSeed(0);
  const x = randn([20000]).data;
  const mean = x.reduce((a, b) => a + b, 0) / x.length;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length;
  assert.ok(Math.abs(mean) < 0.03, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.05, `variance ${variance}`);
  const p = Array.from(new Generator(1).permutation(100)).sort((a, b) => a - b);
  assert.deepEqual(p, [...Array(100).keys()]);
});

test("gradients accumulate across backward calls, and the graph is freed", () => {
  const x = fromArray([1, 2, 3], [3], { requiresGrad: true });
  const y = F.sum(F.mul(x, x));
  y.backward();
  assert.deepEqual(x.grad?.toArray(), [2, 4, 6]);
  assert.equal(y.node, null, "the graph is freed after backward");
  F.sum(F.mul(x, 3)).backward();
  assert.deepEqual(x.grad?.toArray(), [5, 7, 9]);
});

test("a value used by two branches receives both gradients", () => {
  const x = fromArray([1, -2], [2], { requiresGrad: true });
  const h = F.mul(x, 2);
  const y = F.sum(F.add(F.relu(h), F.mul(h, h)));
  y.backward();
  // d/dx [relu(2x) + 4x^2] = 2*[2x>0] + 8x
  assert.deepEqual(x.grad?.toArray(), [2 + 8, -16]);
});

test("noGrad records nothing; backward on a non-grad tensor explains itself", () => {
  const x = fromArray([1, 2], [2], { requiresGrad: true });
  const y = noGrad(() => F.mul(x, 2));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
  assert.throws(() => y.backward(), /does not require grad/);
  const z = F.mul(x, 2);
  assert.throws(
    () => z.backward(),
    /backward\(\) without a gradient needs a scalar but the tensor has shape \[2\]/,
  );
  z.backward(fromArray([1, 1]));
  assert.deepEqual(x.grad?.toArray(), [2, 2]);
});

test("ops reject bad shapes with what was expected and received", () => {
  const x = zeros([8, 1, 224, 224]);
  const w = zeros([64, 3, 3, 3]);
  assert.throws(
    () => F.conv2d(x, w),
    new RangeError(
      "Expected input of shape [N, 3, H, W] for conv2d with weight [64, 3, 3, 3] but received [8, 1, 224, 224]",
    ),
  );
  assert.throws(
    () => F.linear(zeros([2, 5]), zeros([3, 4])),
    new RangeError("Expected input of shape [N, 4] for Linear(4, 3) but received [2, 5]"),
  );
  assert.throws(() => F.maxPool2d(zeros([1, 1, 1, 1]), { kernelSize: 2 }), /too small for max_pool2d/);
  assert.throws(
    () => F.crossEntropy(zeros([2, 3]), [0, 3]),
    new RangeError("Expected target class indices in [0, 3) for cross_entropy but target 1 is 3"),
  );
  assert.throws(() => F.add(zeros([2]), zeros([3])), /same shape for add but received \[2\] and \[3\]/);
});

test("forward values: conv2d, max_pool2d, cross_entropy on hand-computed cases", () => {
  // 3x3 ones kernel over a 3x3 ramp with padding 1: each output sums its neighbourhood.
  const x = fromArray([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 1, 3, 3]);
  const y = F.conv2d(x, ones([1, 1, 3, 3]), fromArray([1]), { padding: 1 });
  assert.deepEqual(y.toArray(), [13, 22, 17, 28, 46, 34, 25, 40, 29]);
  assert.deepEqual(F.maxPool2d(x, { kernelSize: 2, stride: 1 }).toArray(), [5, 6, 8, 9]);
  const loss = F.crossEntropy(fromArray([[0, 0, Math.log(2)]]), [2]).item();
  assert.ok(Math.abs(loss - Math.log(2)) < 1e-6);
  // Stable for huge logits.
  assert.ok(Number.isFinite(F.crossEntropy(fromArray([[1000, -1000]]), [1]).item()));
});

test("dropout: seeded, scaled, identity in eval", () => {
  const x = ones([1000]);
  const a = F.dropout(x, 0.5, true, new Generator(3)).toArray();
  const b = F.dropout(x, 0.5, true, new Generator(3)).toArray();
  assert.deepEqual(a, b);
  assert.ok(a.every((v) => v === 0 || v === 2));
  const kept = a.filter((v) => v === 2).length;
  assert.ok(kept > 430 && kept < 570, `kept ${kept}`);
  assert.equal(F.dropout(x, 0.5, false), x);
  assert.ok(new Tensor(new Float32Array(2), [2]).toString().includes("[2]"));
});
