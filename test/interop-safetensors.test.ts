// safetensors both ways with PyTorch: fixtures from scripts/make_interop_fixtures.py (torch 1.13).
// PyTorch -> vgg-ts: state dicts saved by PyTorch load (with the model described by flags) and give
// PyTorch's logits. vgg-ts -> PyTorch: files saved by vgg-ts's saveModel were loaded by PyTorch with strict
// load_state_dict; the logits PyTorch computed from them are matched here.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { noGrad } from "../src/autograd.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { parseArch, type VggOptions } from "../src/models/vgg.js";
import { Tensor } from "../src/tensor.js";
import { loadModel } from "../src/train/checkpoint.js";

const INTEROP_FIXTURES = join(import.meta.dirname, "..", "..", "test", "fixtures", "interop");

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function io(name: string): { input: Tensor; logits: Float32Array } {
  const { tensors } = readSafetensors(join(INTEROP_FIXTURES, `${name}.io.safetensors`));
  const x = tensors.get("input");
  const y = tensors.get("logits");
  assert.ok(x && y);
  return { input: new Tensor(x.data, x.shape), logits: y.data };
}

const fromTorch: [name: string, arch: string, options: VggOptions][] = [
  ["d2l_vgg11_r32", "vgg11", { layout: "d2l", widthRatio: 32, inputSize: 64, classifierWidth: 32 }],
  [
    "tv_vgg16_r32",
    "vgg16",
    { layout: "torchvision", widthRatio: 32, inChannels: 3, numClasses: 1000, classifierWidth: 32 },
  ],
  [
    "tv_vgg11_bn_r32",
    "vgg11",
    {
      layout: "torchvision",
      widthRatio: 32,
      inChannels: 3,
      numClasses: 10,
      classifierWidth: 32,
      batchNorm: true,
    },
  ],
];

for (const [name, arch, options] of fromTorch)
  test(`PyTorch -> vgg-ts: ${name} gives PyTorch's logits`, () => {
    const path = join(INTEROP_FIXTURES, `${name}.safetensors`);
    assert.throws(() => loadModel(path, null), /carries no vgg-ts model configuration/);
    const { model, configSource } = loadModel(path, { convArch: parseArch(arch), options });
    assert.equal(configSource, "flags");
    model.eval();
    const { input, logits } = io(name);
    const out = noGrad(() => model.forward(input));
    const diff = maxAbsDiff(out.data, logits);
    console.log(`${name}: max |vgg-ts - PyTorch| = ${diff.toExponential(2)} over ${logits.length} logits`);
    assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
  });

test("PyTorch -> vgg-ts: flags that do not describe the file fail with a hint", () => {
  const path = join(INTEROP_FIXTURES, "tv_vgg11_bn_r32.safetensors");
  assert.throws(
    () =>
      loadModel(path, {
        convArch: parseArch("vgg11"),
        options: {
          layout: "torchvision",
          widthRatio: 32,
          inChannels: 3,
          numClasses: 10,
          classifierWidth: 32,
        },
      }),
    /hint: the model flags \(--arch, --ratio, --layout, --batch-norm, \.\.\.\) must describe the saved model/,
  );
});

for (const name of ["vggts_d2l_r8", "vggts_tv_vgg11_bn_r32"])
  test(`vgg-ts -> PyTorch: ${name} as loaded by PyTorch gives the same logits`, () => {
    const { model, configSource } = loadModel(join(INTEROP_FIXTURES, `${name}.safetensors`), null);
    assert.equal(configSource, "metadata");
    model.eval();
    const { input, logits } = io(name);
    const out = noGrad(() => model.forward(input));
    const diff = maxAbsDiff(out.data, logits);
    console.log(`${name}: max |vgg-ts - PyTorch| = ${diff.toExponential(2)} over ${logits.length} logits`);
    assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
  });

test("vgg-ts -> PyTorch: the files hold PyTorch's keys and dtypes (I64 num_batches_tracked)", () => {
  const { tensors, metadata } = readSafetensors(join(INTEROP_FIXTURES, "vggts_tv_vgg11_bn_r32.safetensors"));
  assert.equal(metadata.format, "pt");
  assert.equal(tensors.get("features.1.num_batches_tracked")?.sourceDtype, "I64");
  assert.equal(tensors.get("features.1.num_batches_tracked")?.data[0], 3);
  assert.deepEqual(tensors.get("classifier.6.weight")?.shape, [7, 24]);
});
