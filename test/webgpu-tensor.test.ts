// Tensors on the GPU (useBackend("webgpu")): device storage, explicit asynchronous reads and the error
// `.data` gives, and two SGD steps of the d2l model (also with batch norm) with the library's own Module, SGD and autograd on
// WebGPU against the same step on the CPU. On SwiftShader (see webgpu-setup.ts), so shapes stay small.
import assert from "node:assert/strict";
import { test } from "node:test";
import { useBackend, webGpuDevice } from "../src/backend/index.js";
import { vggNamed } from "../src/models/vgg.js";
import { Conv2d } from "../src/nn/layers.js";
import { crossEntropy } from "../src/ops/loss.js";
import { SGD } from "../src/optim/sgd.js";
import { defaultGenerator, Generator, manualSeed } from "../src/rng.js";
import { fromArray, Tensor } from "../src/tensor.js";
import { openGpu } from "./webgpu-setup.js";

// openGpu sets VK_ICD_FILENAMES to SwiftShader where it is unset, and says why to skip.
const { ctx: probe, skip } = await openGpu();
probe?.destroy();
if (!skip) await useBackend("webgpu");

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

test("a tensor on webgpu: explicit async reads; .data, item() and to('cpu') say how to read it", {
  skip,
}, async () => {
  const host = fromArray([1, 2.5, -3, 4], [2, 2]);
  const t = host.to("webgpu");
  assert.equal(t.device, "webgpu");
  assert.equal(host.device, "cpu");
  assert.deepEqual(t.shape, [2, 2]);
  assert.deepEqual(await t.toArrayAsync(), [1, 2.5, -3, 4]);
  assert.deepEqual(Array.from(await t.dataAsync()), [1, 2.5, -3, 4]);
  assert.deepEqual((await t.cpu()).toArray(), [1, 2.5, -3, 4]);
  assert.equal(t.to("webgpu"), t, "already there");
  assert.throws(
    () => t.data,
    new Error(
      "Tensor(shape=[2, 2], device=webgpu) lives on webgpu, so its values are not in host memory; read them " +
        "with await t.toArrayAsync(), await t.dataAsync() or await t.itemAsync(), or copy it with await t.cpu()",
    ),
  );
  assert.throws(() => t.toArray(), /lives on webgpu, so its values are not in host memory/);
  const one = fromArray([7.25], []).to("webgpu");
  assert.throws(() => one.item(), /await t\.itemAsync\(\)/);
  assert.equal(await one.itemAsync(), 7.25);
  await assert.rejects(
    () => t.itemAsync(),
    new RangeError("itemAsync() expects a tensor with one element but it has 4"),
  );
  assert.throws(
    () => t.to("cpu"),
    new Error("Tensor(shape=[2, 2], device=webgpu) lives on webgpu: copy it to the host with await t.cpu()"),
  );
});

test("an op mixing host and webgpu tensors names which is where", { skip }, () => {
  manualSeed(0);
  const model = vggNamed("vgg11", {
    widthRatio: 16,
    inChannels: 1,
    inputSize: 32,
    classifierWidth: 32,
    layout: "d2l",
  });
  model.to("webgpu");
  assert.throws(
    () => model.forward(new Tensor(new Float32Array(32 * 32), [1, 1, 32, 32])),
    new Error(
      'Expected weight of conv2d on cpu (where its input is) but it is on webgpu; move the model and the inputs to one device (model.to("webgpu"), x.to(...))',
    ),
  );
});

const steps = (bn: boolean) =>
  `two SGD steps of the d2l model${bn ? " with batch norm" : ""} on webgpu equal the CPU's (loss, gradients, parameters${bn ? ", running statistics" : ""})`;
for (const batchNorm of [false, true])
  test(steps(batchNorm), { skip, timeout: 600_000 }, async (t) => {
    // The d2l model (VGG-11 blocks, Linear-ReLU-Dropout twice), narrowed (ratio 8, width 256) at 32x32.
    const build = () => {
      manualSeed(5);
      return vggNamed("vgg11", {
        widthRatio: 8,
        inChannels: 1,
        inputSize: 32,
        classifierWidth: 256,
        layout: "d2l",
        batchNorm,
      });
    };
    const cpu = build();
    const onGpu = build().to("webgpu");
    assert.equal(onGpu.device(), "webgpu");
    const config = { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 };
    const [cpuOpt, gpuOpt] = [new SGD(cpu.parameters(), config), new SGD(onGpu.parameters(), config)];
    const data = new Generator(11);
    const batch = 4;
    const shape = [batch, 1, 32, 32];
    const images = Float32Array.from({ length: batch * 32 * 32 }, () => data.uniform(-1, 1));
    const targets = Int32Array.from({ length: batch }, () => data.int(10));
    const zeroGrad = new Set(
      batchNorm
        ? cpu
            .namedModules()
            .filter(([, m]) => m instanceof Conv2d)
            .map(([n]) => `${n}.bias`)
        : [],
    );
    let [worstGrad, worstParam] = [0, 0];
    for (let step = 0; step < 2; step++) {
      const rng = defaultGenerator.getState();
      cpuOpt.zeroGrad();
      const cpuLoss = crossEntropy(cpu.forward(new Tensor(images.slice(), shape)), targets);
      cpuLoss.backward();
      const cpuGrads = cpu.parameters().map((p) => p.peekGrad()!.data.slice());
      cpuOpt.step();
      const cpuRng = defaultGenerator.getState();
      defaultGenerator.setState(rng); // the same dropout masks
      gpuOpt.zeroGrad();
      const gpuLoss = crossEntropy(onGpu.forward(new Tensor(images, shape).to("webgpu")), targets);
      assert.equal(gpuLoss.device, "webgpu");
      gpuLoss.backward();
      const gpuGrads = await Promise.all(onGpu.parameters().map((p) => p.peekGrad()!.dataAsync()));
      gpuOpt.step();
      assert.deepEqual(defaultGenerator.getState(), cpuRng, "the same number of draws");
      const [l, ref] = [await gpuLoss.itemAsync(), cpuLoss.item()];
      assert.ok(Math.abs(l - ref) <= 1e-4 * Math.abs(ref), `step ${step}: loss ${l} vs ${ref}`);
      const names = cpu.namedParameters().map(([n]) => n);
      for (let i = 0; i < names.length; i++) {
        const g = relDiff(gpuGrads[i], cpuGrads[i]);
        const v = relDiff(await onGpu.parameters()[i].dataAsync(), cpu.parameters()[i].data);
        if (!zeroGrad.has(names[i])) worstGrad = Math.max(worstGrad, g);
        worstParam = Math.max(worstParam, v);
        if (zeroGrad.has(names[i])) {
          // A convolution's bias under batch norm has gradient 0 (the normalisation cancels it): both
          // sides give rounding noise.
          const noise = Math.max(...gpuGrads[i].map(Math.abs), ...cpuGrads[i].map(Math.abs));
          assert.ok(noise <= 1e-6, `step ${step} ${names[i]}: a zero gradient came out as ${noise}`);
          continue;
        }
        assert.ok(g <= 1e-4, `step ${step} ${names[i]}: gradient relative difference ${g}`);
        assert.ok(v <= 1e-4, `step ${step} ${names[i]}: parameter relative difference ${v}`);
      }
      for (const [name, b] of cpu.namedBuffers()) {
        const mine = onGpu.namedBuffers().find(([n]) => n === name)![1];
        const v = relDiff(await mine.dataAsync(), b.data);
        assert.ok(v <= 1e-5, `step ${step} ${name}: relative difference ${v}`);
      }
    }
    t.diagnostic(
      `${batchNorm ? "batch norm: " : ""}worst relative difference: gradients ${worstGrad.toExponential(2)}, parameters ${worstParam.toExponential(2)}`,
    );
    assert.ok(webGpuDevice(), "the device stays open");
  });

test("useBackend('webgpu') without an adapter fails naming what Dawn looked for", {
  timeout: 120_000,
}, async (t) => {
  const { spawnSync } = await import("node:child_process");
  const script =
    'const { useBackend } = await import(process.argv[1]); try { await useBackend("webgpu"); console.log("opened"); } ' +
    'catch (e) { console.log(e.name + ": " + e.message); }';
  const index = new URL("../src/backend/index.js", import.meta.url).href;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script, index], {
    encoding: "utf8",
    env: { ...process.env, VK_ICD_FILENAMES: "/nonexistent/icd.json" },
    timeout: 100_000,
  });
  if (/npm package "webgpu"/.test(r.stdout)) {
    t.skip("the optional webgpu package is not installed");
    return;
  }
  assert.match(
    r.stdout,
    /^WebGpuUnavailableError: Dawn found no WebGPU adapter: it looked for .*(VK_ICD_FILENAMES=\/nonexistent\/icd\.json|libvulkan1).*set VK_ICD_FILENAMES=\/usr\/lib\/chromium\/vk_swiftshader_icd\.json\n$/,
  );
});
