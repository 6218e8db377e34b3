// nn modules: naming, state dicts with exact error messages, train/eval, initialisation.
import assert from "node:assert/strict";
import { test } from "node:test";
import { setBackend } from "../src/backend/index.js";
import * as nn from "../src/nn/index.js";
import { manualSeed } from "../src/rng.js";
import { fromArray, randn, zeros } from "../src/tensor.js";

setBackend("reference");

function tiny() {
  return new nn.Sequential(
    new nn.Sequential(new nn.Conv2d(1, 2, 3, { padding: 1 }), new nn.BatchNorm2d(2), new nn.ReLU()),
    new nn.Flatten(),
    new nn.Linear(8, 3),
  );
}

test("parameters and buffers are named by the module tree, as PyTorch", () => {
  const net = tiny();
  assert.deepEqual(
    net.namedParameters().map(([n]) => n),
    ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "2.weight", "2.bias"],
  );
  assert.deepEqual(
    [...net.stateDict().keys()],
    [
      "0.0.weight",
      "0.0.bias",
      "0.1.weight",
      "0.1.bias",
      "2.weight",
      "2.bias",
      "0.1.running_mean",
      "0.1.running_var",
      "0.1.num_batches_tracked",
    ],
  );
  assert.equal(net[2].constructor.name, "Linear");
  assert.deepEqual(
    [...net].map((m) => m.constructor.name),
    ["Sequential", "Flatten", "Linear"],
  );
  assert.equal(net.length, 3);
});

test("stateDict round-trips through loadStateDict", () => {
  manualSeed(1);
  const a = tiny();
  manualSeed(2);
  const b = tiny();
  const x = randn([2, 1, 2, 2]);
  a.eval();
  b.eval();
  assert.notDeepEqual(a.forward(x).toArray(), b.forward(x).toArray());
  const copy = new Map([...a.stateDict()].map(([k, t]) => [k, { shape: t.shape, data: t.data.slice() }]));
  b.loadStateDict(copy);
  assert.deepEqual(a.forward(x).toArray(), b.forward(x).toArray());
});

test("loadStateDict errors name missing, unexpected and mismatched keys, and change nothing", () => {
  const net = tiny();
  const state = new Map(
    [...net.stateDict()].map(([k, t]) => [k, { shape: [...t.shape], data: t.data.slice() }]),
  );
  state.delete("2.bias");
  state.set("3.weight", { shape: [1], data: new Float32Array(1) });
  state.set("0.0.weight", { shape: [2, 1, 5, 5], data: new Float32Array(50) });
  const before = net.parameters().map((p) => p.toArray());
  assert.throws(
    () => net.loadStateDict(state),
    new Error(
      "Error(s) in loading state dict for Sequential:\n" +
        "  Missing key(s) in state dict: 2.bias.\n" +
        "  Unexpected key(s) in state dict: 3.weight.\n" +
        "  size mismatch for 0.0.weight: copying a param with shape [2, 1, 5, 5], the shape in current model is [2, 1, 3, 3].",
    ),
  );
  assert.deepEqual(
    net.parameters().map((p) => p.toArray()),
    before,
  );
  state.set("0.0.weight", { shape: [2, 1, 3, 3], data: new Float32Array(18).fill(0.5) });
  const result = net.loadStateDict(state, { strict: false });
  assert.deepEqual(result, { missingKeys: ["2.bias"], unexpectedKeys: ["3.weight"] });
  assert.equal(net.stateDict().get("0.0.weight")?.data[0], 0.5);
});

test("train() and eval() reach every descendant; dropout and batch norm follow them", () => {
  const net = new nn.Sequential(new nn.Sequential(new nn.Dropout(0.5)), new nn.BatchNorm2d(1));
  net.eval();
  assert.ok(net.modules().every((m) => !m.training));
  const x = fromArray([1, 2, 3, 4], [1, 1, 2, 2]);
  const drop = net[0] as nn.Sequential;
  assert.deepEqual(
    net
      .forward(x)
      .toArray()
      .map((v) => Math.round(v * 1e4) / 1e4),
    [1, 2, 3, 4].map((v) => Math.round((v / Math.sqrt(1 + 1e-5)) * 1e4) / 1e4),
  );
  net.train();
  assert.ok(net.modules().every((m) => m.training));
  assert.notDeepEqual(drop.forward(x).toArray(), x.toArray(), "dropout is active in training");
  const bn = net[1] as nn.BatchNorm2d;
  bn.forward(x);
  // running_mean = 0.9 * 0 + 0.1 * 2.5; running_var = 0.9 * 1 + 0.1 * unbiased var (5/3)
  assert.ok(Math.abs(bn.runningMean.data[0] - 0.25) < 1e-6);
  assert.ok(Math.abs(bn.runningVar.data[0] - (0.9 + 0.1 * (5 / 3))) < 1e-6);
  assert.equal(bn.stateDict().get("num_batches_tracked")?.data[0], 1);
});

test("default initialisation follows PyTorch's bounds; init functions follow their formulas", () => {
  manualSeed(0);
  const conv = new nn.Conv2d(16, 32, 3);
  const bound = 1 / Math.sqrt(16 * 9);
  assert.ok(conv.weight.toArray().every((v) => Math.abs(v) <= bound));
  assert.ok(conv.bias!.toArray().every((v) => Math.abs(v) <= bound));
  const max = Math.max(...conv.weight.toArray().map(Math.abs));
  assert.ok(max > 0.9 * bound, "uses the whole range");
  const lin = new nn.Linear(100, 50);
  nn.init.xavierUniform_(lin.weight);
  const a = Math.sqrt(6 / 150);
  assert.ok(lin.weight.toArray().every((v) => Math.abs(v) <= a));
  const big = zeros([256, 128, 3, 3]);
  nn.init.kaimingNormal_(big, { mode: "fan_out", nonlinearity: "relu" });
  const std = Math.sqrt(big.toArray().reduce((s, v) => s + v * v, 0) / big.size);
  assert.ok(Math.abs(std - Math.sqrt(2 / (256 * 9))) / std < 0.02, `std ${std}`);
  nn.init.normal_(big, 0, 0.01);
  nn.init.zeros_(lin.bias!);
  assert.ok(lin.bias!.toArray().every((v) => v === 0));
});

test("layers describe themselves as PyTorch's repr and check their input", () => {
  assert.equal(new nn.Conv2d(1, 64, 3, { padding: 1 }).describe(), "Conv2d(1, 64, kernel_size=3, padding=1)");
  assert.equal(new nn.Linear(4, 2).describe(), "Linear(in_features=4, out_features=2, bias=True)");
  assert.throws(
    () => new nn.Conv2d(3, 64, 3).forward(zeros([8, 1, 224, 224])),
    new RangeError(
      "Expected input of shape [N, 3, H, W] for Conv2d(3, 64, kernel_size=3) but received [8, 1, 224, 224]",
    ),
  );
  assert.throws(() => new nn.Linear(0, 2), /positive integer/);
});
