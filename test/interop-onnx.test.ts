// ONNX export checked by running it: onnxruntime-node's outputs against vgg-ts's on the same inputs, for
// both layouts, with and without batch norm (running statistics moved away from 0/1), at two batch sizes
// on one session (the batch dimension is symbolic), plus the graph's declared shape and the errors.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import ort from "onnxruntime-node";
import { noGrad } from "../src/autograd.js";
import { decodeOnnx, exportOnnx } from "../src/interop/onnx.js";
import { parseArch, type VggModel, type VggOptions, vgg } from "../src/models/vgg.js";
import * as nn from "../src/nn/index.js";
import { loadModel } from "../src/train/checkpoint.js";
import { randomTensor } from "./helpers.js";

const INTEROP_FIXTURES = join(import.meta.dirname, "..", "..", "test", "fixtures", "interop");

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

/** Weights of order sqrt(6 / fan_in), so logits are of order one and a 1e-4 tolerance means something. */
function spreadWeights(model: VggModel): void {
  noGrad(() => {
    for (const m of model.modules())
      if (m instanceof nn.Conv2d || m instanceof nn.Linear) {
        const bound = Math.sqrt(6 / (m.weight.size / m.weight.shape[0]));
        nn.init.uniform_(m.weight, -bound, bound);
        if (m.bias) nn.init.uniform_(m.bias, -0.1, 0.1);
      } else if (m instanceof nn.BatchNorm2d) {
        nn.init.uniform_(m.weight, 0.5, 1.5);
        nn.init.uniform_(m.bias, -0.2, 0.2);
      }
  });
}

function moveBatchNormStats(model: VggModel, shape: number[]): void {
  model.train();
  noGrad(() => {
    for (let i = 0; i < 3; i++) model.forward(randomTensor(shape, 100 + i, -0.5, 1.5, false));
  });
  model.eval();
}

async function compareWithOrt(model: VggModel, bytes: Uint8Array, size: number, batches: number[]) {
  const session = await ort.InferenceSession.create(bytes);
  const c = model.config.inChannels;
  let worst = 0;
  for (const n of batches) {
    const x = randomTensor([n, c, size, size], n, -1, 1, false);
    const { logits } = await session.run({ input: new ort.Tensor("float32", x.data, x.shape) });
    assert.deepEqual(logits.dims, [n, model.config.numClasses]);
    const ours = noGrad(() => model.forward(x));
    worst = Math.max(worst, maxAbsDiff(ours.data, logits.data as Float32Array));
  }
  return worst;
}

const cases: [string, VggOptions, number][] = [
  ["d2l", { layout: "d2l", inputSize: 28, classifierWidth: 24 }, 28],
  ["d2l + batch norm", { layout: "d2l", inputSize: 32, classifierWidth: 24, batchNorm: true }, 32],
  ["torchvision (7x7 trunk: no pooling)", { layout: "torchvision", inChannels: 3, classifierWidth: 24 }, 28],
  [
    "torchvision + batch norm (14x14 trunk: AveragePool 2x2)",
    { layout: "torchvision", inChannels: 3, classifierWidth: 24, batchNorm: true, numClasses: 5 },
    56,
  ],
];

for (const [name, options, size] of cases)
  test(`ONNX export runs in onnxruntime and matches vgg-ts: ${name}`, async () => {
    const model = vgg(parseArch("1x4,2x8"), options);
    spreadWeights(model);
    if (options.batchNorm) moveBatchNormStats(model, [4, model.config.inChannels, size, size]);
    model.eval();
    const bytes = exportOnnx(model, { inputSize: size });
    const worst = await compareWithOrt(model, bytes, size, [1, 3]);
    const scale = Math.max(
      ...noGrad(() => model.forward(randomTensor([1, model.config.inChannels, size, size], 9))).data.map(
        Math.abs,
      ),
    );
    console.log(
      `${name}: max |onnxruntime - vgg-ts| = ${worst.toExponential(2)} (|logits| up to ${scale.toFixed(2)})`,
    );
    assert.ok(worst <= 1e-4, `max abs diff ${worst}`);
    const ops = new Set(decodeOnnx(bytes).graph?.node?.map((n) => n.opType));
    assert.equal(ops.has("BatchNormalization"), options.batchNorm === true);
    assert.equal(ops.has("AveragePool"), size === 56);
  });

test("the ONNX graph: opset 13, symbolic batch, initializers named by state dict keys", () => {
  const model = vgg(parseArch("1x4,1x8"), { layout: "torchvision", inChannels: 3, classifierWidth: 16 });
  const m = decodeOnnx(exportOnnx(model, { inputSize: 28 }));
  assert.equal(Number(m.opsetImport[0].version), 13);
  assert.equal(m.producerName, "vgg-ts");
  const g = m.graph;
  assert.ok(g?.input && g.output && g.initializer && g.node);
  const dims = g.input[0].type?.tensorType?.shape?.dim?.map((d) => d.dimParam || Number(d.dimValue));
  assert.deepEqual(dims, ["batch", 3, 28, 28]);
  const out = g.output[0].type?.tensorType?.shape?.dim?.map((d) => d.dimParam || Number(d.dimValue));
  assert.deepEqual(out, ["batch", 10]);
  assert.deepEqual(
    g.initializer.map((t) => t.name),
    [...model.stateDict().keys()],
  );
  assert.deepEqual(
    g.node.map((n) => n.opType),
    ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"],
  );
});

test("ONNX export errors: sizes adaptive pooling cannot express, a d2l size change, an old opset", () => {
  const tv = vgg(parseArch("1x4,1x8"), { layout: "torchvision", inChannels: 3, classifierWidth: 16 });
  assert.throws(() => exportOnnx(tv, { inputSize: 36 }), {
    message:
      "Expected a trunk output that is a multiple of 7 (so AdaptiveAvgPool2d(7) is an ONNX AveragePool) but received 9x9 for a 36x36 input; hint: export with --input-size 28 or 56",
  });
  const d2l = vgg(parseArch("1x4,1x8"), { inputSize: 28, classifierWidth: 16 });
  assert.throws(() => exportOnnx(d2l, { inputSize: 56 }), {
    message:
      "Expected inputSize 28 for this d2l-layout model (its classifier is sized for it) but received 56; hint: only torchvision-layout models take other sizes",
  });
  assert.throws(() => exportOnnx(d2l, { opset: 11 }), {
    message: "Expected an ONNX opset >= 13 but received 11",
  });
});

function vggCli(...args: string[]) {
  // A hang guard: a hang fails with its output.
  const r = spawnSync(process.execPath, ["bin/vgg", ...args], { encoding: "utf8", timeout: 300_000 });
  if (r.error) throw new Error(`vgg ${args.join(" ")}: ${r.error.message}\n${r.stdout}${r.stderr}`);
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("vgg export: PyTorch's torchvision-layout vgg11_bn (1/32 width) to ONNX at 224, run by onnxruntime", async () => {
  const weights = join(INTEROP_FIXTURES, "tv_vgg11_bn_r32.safetensors");
  const flags = [
    ...["--arch", "vgg11", "--ratio", "32", "--layout", "torchvision", "--batch-norm"],
    ...["--classifier-width", "32", "--num-classes", "10"],
  ];
  const out = join(mkdtempSync(join(tmpdir(), "vgg-onnx-")), "vgg16.onnx");
  const r = vggCli("export", "--weights", weights, ...flags, "--format", "onnx", "-o", out);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /opset 13\): input \[batch, 3, 224, 224\] -> logits \[batch, 10\]/);
  const { model } = loadModel(weights, {
    convArch: parseArch("vgg11"),
    options: {
      layout: "torchvision",
      widthRatio: 32,
      inChannels: 3,
      numClasses: 10,
      classifierWidth: 32,
      batchNorm: true,
    },
  });
  model.eval();
  const worst = await compareWithOrt(model, readFileSync(out), 224, [2]);
  console.log(`vgg11_bn/32 at 224: max |onnxruntime - vgg-ts| = ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-4, `max abs diff ${worst}`);

  const bad = vggCli("export", "--weights", weights, ...flags, "--input-size", "100", "-o", out);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /received 3x3 for a 100x100 input; hint: export with --input-size 224 or 448/);
});
