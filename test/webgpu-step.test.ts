// Two SGD steps (momentum, weight decay, dropout) of a d2l-layout VGG composed from the WebGPU kernels
// (bench/webgpu-step.ts) equal the library's CPU steps: the loss, every gradient and every updated
// parameter, with the dropout masks drawn from the same generator stream. The network is the d2l
// model's structure (VGG blocks of 3x3 conv + ReLU and 2x2 max-pool, Flatten, Linear-ReLU-Dropout twice,
// Linear) made narrow and 16x16 so that SwiftShader runs it in seconds.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebGpuSequentialStep } from "../bench/webgpu-step.js";
import { vgg } from "../src/models/vgg.js";
import { crossEntropy } from "../src/ops/loss.js";
import { SGD } from "../src/optim/sgd.js";
import { defaultGenerator, Generator, manualSeed } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";
import { openGpu } from "./webgpu-setup.js";

const { ctx: gpu, skip } = await openGpu();
after(() => gpu?.destroy());

/** max |a - b| / max |b|: the relative difference of a whole tensor. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return m === 0 ? d : d / m;
}

test("two SGD steps of a d2l-layout VGG on WebGPU equal the CPU's (loss, gradients, parameters)", {
  skip,
  timeout: 600_000,
}, async (t) => {
  const ctx = gpu!;
  manualSeed(3);
  const arch = [
    [1, 4],
    [1, 8],
    [2, 8],
  ] as const;
  const model = vgg(arch, {
    inChannels: 1,
    inputSize: 16,
    classifierWidth: 24,
    numClasses: 10,
    layout: "d2l",
  });
  const sgdConfig = { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 };
  const step = new WebGpuSequentialStep(ctx, model, sgdConfig);
  const data = new Generator(11);
  const batch = 3;
  const images = Float32Array.from({ length: batch * 16 * 16 }, () => data.uniform(-1, 1));
  const targets = Int32Array.from({ length: batch }, () => data.int(10));
  const gpuGenerator = new Generator(0);
  const opt = new SGD(model.parameters(), sgdConfig);
  let [worstGrad, worstParam] = [0, 0];
  for (let s = 0; s < 2; s++) {
    // The GPU step draws its dropout masks from a copy of the generator the CPU's Dropout uses.
    gpuGenerator.setState(defaultGenerator.getState());
    const submitsBefore = ctx.submits;
    const lossOnGpu = step.step(images, [batch, 1, 16, 16], targets, gpuGenerator);
    // The uploads of images and labels, one per dropout layer (each submits what came before), the
    // ones vector of the bias gradients on the first step, and the submit at the end.
    const submits = ctx.submits - submitsBefore;
    assert.ok(submits <= (s === 0 ? 6 : 5), `step ${s}: ${submits} submits`);
    opt.zeroGrad();
    const loss = crossEntropy(model.forward(new Tensor(images.slice(), [batch, 1, 16, 16])), targets);
    loss.backward();
    const cpuLoss = loss.item();
    const gpuLoss = (await ctx.readFloat32(lossOnGpu))[0];
    assert.ok(
      Math.abs(gpuLoss - cpuLoss) <= 1e-4 * Math.abs(cpuLoss),
      `step ${s}: loss ${gpuLoss} vs ${cpuLoss}`,
    );
    assert.deepEqual(gpuGenerator.getState(), defaultGenerator.getState(), "the same number of draws");
    const grads = new Map(model.parameters().map((p) => [p, p.grad!.data.slice()]));
    opt.step();
    for (const [name, p] of model.namedParameters()) {
      const onGpu = await step.read(p);
      const g = relDiff(onGpu.grad, grads.get(p)!);
      worstGrad = Math.max(worstGrad, g);
      worstParam = Math.max(worstParam, relDiff(onGpu.value, p.data));
      assert.ok(g <= 1e-3, `step ${s} ${name}: gradient relative difference ${g}`);
      const v = relDiff(onGpu.value, p.data);
      assert.ok(v <= 1e-4, `step ${s} ${name}: parameter relative difference ${v}`);
    }
  }
  t.diagnostic(
    `worst relative difference: gradients ${worstGrad.toExponential(2)}, parameters ${worstParam.toExponential(2)}`,
  );
});
