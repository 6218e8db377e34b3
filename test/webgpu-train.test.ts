// A short training run (fit, the library's whole run as `vgg train` does it) on WebGPU reaches the
// accuracy of the same run on the CPU, from the same seed, and its model.safetensors is the same file
// format the CPU backends read: evaluated on the CPU it gives the run's accuracy. Synthetic
// Fashion-MNIST files (test/helpers.ts) at 16x16 and a two-block d2l-layout VGG with batch norm (which
// learns in 20 steps) keep SwiftShader's time to about a minute.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadFashionMnist } from "../src/data/fashion-mnist.js";
import { DataLoader } from "../src/data/loader.js";
import { loadModel } from "../src/train/checkpoint.js";
import { fit } from "../src/train/fit.js";
import { evaluate } from "../src/train/trainer.js";
import { writeSyntheticFashionMnist } from "./helpers.js";
import { openGpu } from "./webgpu-setup.js";

const { ctx: probe, skip } = await openGpu();
probe?.destroy();
const dir = mkdtempSync(join(tmpdir(), "vgg-webgpu-train-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("fit on webgpu reaches the CPU run's accuracy within 1 point; its weights evaluate the same on the CPU", {
  skip,
  timeout: 1_200_000,
}, async (t) => {
  const dataDir = join(dir, "data");
  writeSyntheticFashionMnist(dataDir, { train: 160, test: 160 });
  const recipe = {
    dataDir,
    download: false,
    arch: "1x8,1x16",
    ratio: 1,
    batchNorm: true,
    resize: 16,
    classifierWidth: 32,
    epochs: 2,
    batchSize: 16,
    lr: 0.05,
    momentum: 0.9,
    seed: 1,
  };
  const quiet = { log: () => {} };
  const cpu = await fit({ ...recipe, backend: "reference", out: join(dir, "cpu") }, quiet);
  const gpu = await fit({ ...recipe, backend: "webgpu", out: join(dir, "gpu") }, quiet);
  assert.match(gpu.device, /^webgpu \(/);
  assert.equal(gpu.model.device(), "webgpu");
  const [a, b] = [gpu.last!.testAcc, cpu.last!.testAcc];
  t.diagnostic(
    `test accuracy: webgpu ${a}, cpu ${b}; train loss ${gpu.last!.trainLoss} vs ${cpu.last!.trainLoss}`,
  );
  assert.ok(b > 0.5, `the CPU run learned (test accuracy ${b})`);
  assert.ok(Math.abs(a - b) <= 0.01, `webgpu ${a} vs cpu ${b}`);
  // The run's weights, read back on the host, as any CPU run's.
  const { model } = loadModel(join(dir, "gpu", "model.safetensors"), null);
  assert.equal(model.device(), "cpu");
  const test = await loadFashionMnist({ dataDir, split: "test", download: false });
  const loader = new DataLoader(test, { batchSize: 64, resize: 16 });
  try {
    const m = await evaluate(model, loader.batches(0), 10);
    assert.ok(Math.abs(m.accuracy - a) <= 0.01, `on the CPU ${m.accuracy} vs the run's ${a}`);
  } finally {
    await loader.close();
  }
});
