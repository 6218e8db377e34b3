// The VGG family: the d2l shape walk, torchvision's parameter counts and key names, input errors.
import assert from "node:assert/strict";
import { test } from "node:test";
import { noGrad } from "../src/autograd.js";
import { parseArch, VGG, vgg, vggArchs, vggBlock, vggNamed } from "../src/models/vgg.js";
import { BatchNorm2d } from "../src/nn/layers.js";
import * as F from "../src/ops/index.js";
import { manualSeed } from "../src/rng.js";
import { randn } from "../src/tensor.js";

// The shape walk at 224 runs on the default backend (native when built); the rest on the reference.

test("the d2l shape walk for VGG-11 on a 1x1x224x224 input", () => {
  manualSeed(0);
  const net = vgg(vggArchs.vgg11);
  let X = randn([1, 1, 224, 224]);
  const lines: string[] = [];
  noGrad(() => {
    for (const blk of net) {
      X = blk.forward(X);
      lines.push(`${blk.constructor.name} output shape:\t[${X.shape.join(", ")}]`);
    }
  });
  assert.deepEqual(lines, [
    "Sequential output shape:\t[1, 64, 112, 112]",
    "Sequential output shape:\t[1, 128, 56, 56]",
    "Sequential output shape:\t[1, 256, 28, 28]",
    "Sequential output shape:\t[1, 512, 14, 14]",
    "Sequential output shape:\t[1, 512, 7, 7]",
    "Flatten output shape:\t[1, 25088]",
    "Linear output shape:\t[1, 4096]",
    "ReLU output shape:\t[1, 4096]",
    "Dropout output shape:\t[1, 4096]",
    "Linear output shape:\t[1, 4096]",
    "ReLU output shape:\t[1, 4096]",
    "Dropout output shape:\t[1, 4096]",
    "Linear output shape:\t[1, 10]",
  ]);
});

test("torchvision's parameter counts for vgg11/13/16/19 (3 channels, 1000 classes)", () => {
  const expected = { vgg11: 132_863_336, vgg13: 133_047_848, vgg16: 138_357_544, vgg19: 143_667_240 };
  for (const [name, count] of Object.entries(expected)) {
    const net = vggNamed(name as keyof typeof expected);
    assert.equal(
      net.parameters().reduce((s, p) => s + p.size, 0),
      count,
      name,
    );
  }
  // Batch norm adds 2 parameters per conv channel: vgg11_bn has 132,868,840.
  assert.equal(
    vggNamed("vgg11", { batchNorm: true })
      .parameters()
      .reduce((s, p) => s + p.size, 0),
    132_868_840,
  );
});

test("d2l layout keys are PyTorch's for the nested Sequential; the head width is derived", () => {
  const net = vgg(vggArchs.vgg11, { widthRatio: 4 }) as VGG;
  const names = net.namedParameters().map(([n]) => n);
  assert.deepEqual(
    names.filter((n) => n.endsWith("weight")),
    [
      "0.0.weight",
      "1.0.weight",
      "2.0.weight",
      "2.2.weight",
      "3.0.weight",
      "3.2.weight",
      "4.0.weight",
      "4.2.weight",
      "6.weight",
      "9.weight",
      "12.weight",
    ],
  );
  assert.deepEqual(net.stateDict().get("6.weight")?.shape, [4096, 128 * 7 * 7]);
  const small = vgg(vggArchs.vgg11, { widthRatio: 4, inputSize: 32, classifierWidth: 64 }) as VGG;
  assert.deepEqual(small.stateDict().get("6.weight")?.shape, [64, 128]);
  assert.equal(vggBlock(2, 3, 8).length, 5);
});

test("torchvision layout keys, batch norm variant, and block outputs", () => {
  const net = vggNamed("vgg11", { batchNorm: true, widthRatio: 16, numClasses: 5 });
  const keys = [...net.stateDict().keys()];
  assert.equal(keys[0], "features.0.weight");
  assert.ok(keys.includes("features.1.running_var"));
  assert.ok(keys.includes("classifier.6.bias"));
  assert.deepEqual(net.stateDict().get("classifier.0.weight")?.shape, [4096, 32 * 7 * 7]);
  net.eval();
  const x = randn([2, 3, 40, 36]);
  const out = noGrad(() => net.forward(x));
  assert.deepEqual(out.shape, [2, 5]);
  const blocks = noGrad(() => net.blockOutputs(x));
  assert.deepEqual(
    blocks.map((b) => b.shape),
    [
      [2, 4, 20, 18],
      [2, 8, 10, 9],
      [2, 16, 5, 4],
      [2, 32, 2, 2],
      [2, 32, 1, 1],
    ],
  );
});

test("the fused conv+relu path equals the layer-by-layer walk", () => {
  manualSeed(3);
  const net = vgg(
    [
      [1, 4],
      [2, 8],
    ],
    { inputSize: 8, classifierWidth: 8 },
  ) as VGG;
  net.eval();
  const x = randn([2, 1, 8, 8]);
  const fused = noGrad(() => net.forward(x)).toArray();
  let y = x;
  noGrad(() => {
    for (const blk of net) for (const layer of blk instanceof VGG ? [] : [blk]) y = layer.forward(y);
  });
  // Walking the blocks runs each inner Sequential (fused); walk the leaves one by one instead.
  let z = x;
  noGrad(() => {
    for (const [, m] of net.namedModules()) if (m.namedChildren().length === 0) z = m.forward(z);
  });
  assert.deepEqual(fused, y.toArray());
  assert.deepEqual(fused, z.toArray());
});

test("the fused batch norm + ReLU equals the layer-by-layer walk, forward and backward, train and eval", () => {
  manualSeed(4);
  const net = vgg(
    [
      [1, 4],
      [2, 8],
    ],
    { inputSize: 8, classifierWidth: 8, batchNorm: true },
  ) as VGG;
  const x = randn([3, 1, 8, 8]);
  const leaves = net.namedModules().filter(([, m]) => m.namedChildren().length === 0);
  assert.ok(leaves.some(([, m]) => m instanceof BatchNorm2d));
  const run = (fused: boolean) => {
    manualSeed(9); // the same dropout masks
    for (const p of net.parameters()) p.grad = null;
    let y = x;
    if (fused) y = net.forward(x);
    else for (const [, m] of leaves) y = m.forward(y);
    F.sum(F.mul(y, y)).backward();
    return { y: y.toArray(), grads: net.parameters().map((p) => Array.from(p.grad!.data)) };
  };
  for (const mode of ["train", "eval"] as const) {
    if (mode === "train") net.train();
    else net.eval();
    const fused = run(true);
    const walked = run(false);
    assert.deepEqual(fused.y, walked.y, `${mode}: outputs differ`);
    assert.deepEqual(fused.grads, walked.grads, `${mode}: gradients differ`);
  }
});

test("a wrong input shape names the layer, the shapes and a hint", () => {
  const net = vgg(vggArchs.vgg11, { widthRatio: 4 });
  assert.throws(
    () => net.forward(randn([8, 1, 28, 28])),
    new RangeError(
      "Expected input of shape [N, 1, 224, 224] for VGG but received [8, 1, 28, 28]; hint: resize the images to 224x224 (e.g. --resize 224) or build the model with inputSize: 28",
    ),
  );
  assert.throws(() => net.forward(randn([1, 3, 224, 224])), /hint: the model takes 1-channel images/);
  assert.throws(() => parseArch("1x64,2"), /Expected an architecture name/);
  assert.deepEqual(parseArch("1x64,2x128"), [
    [1, 64],
    [2, 128],
  ]);
  assert.throws(() => vgg(vggArchs.vgg11, { inputSize: 16 }), /inputSize to be an integer >= 32/);
});
