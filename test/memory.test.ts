// Memory stays flat over a long run: a child process (--expose-gc) trains a small VGG with batch norm,
// momentum and dropout for 16 "epochs" of forward/backward/SGD steps on the native backend (and a shorter
// run on the reference backend), collecting garbage and sampling the resident set size after each epoch.
// After a warm-up of 4 epochs (allocator pools, kernel workspaces, JIT, V8's heap sizing, which was seen
// still stepping up by ~7 MB in epochs 3-5 on a fresh clone) the RSS must not keep growing:
// a leak of one first-layer activation per step (128 KB x 40 steps = 5 MB per epoch) would show as steady growth.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const EPOCHS = 16;
const WARMUP = 4;
const STEPS = 40;

async function runChild(backendName: "native" | "reference", epochs: number): Promise<number[]> {
  const { setBackend } = await import("../src/backend/index.js");
  const { vgg } = await import("../src/models/vgg.js");
  const { crossEntropy } = await import("../src/ops/index.js");
  const { SGD } = await import("../src/optim/sgd.js");
  const { Tensor } = await import("../src/tensor.js");
  const { manualSeed } = await import("../src/rng.js");
  setBackend(backendName);
  manualSeed(1);
  const model = vgg(
    [
      [1, 8],
      [1, 16],
    ],
    { inputSize: 16, classifierWidth: 32, batchNorm: true, dropout: 0.5 },
  );
  const opt = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9, weightDecay: 1e-4 });
  const batch = 16;
  const x = new Float32Array(batch * 16 * 16);
  const y = new Int32Array(batch);
  let s = 3;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with --expose-gc");
  const rss: number[] = [];
  for (let epoch = 0; epoch < epochs; epoch++) {
    model.train();
    for (let step = 0; step < STEPS; step++) {
      for (let i = 0; i < x.length; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        x[i] = s / 4294967296;
      }
      for (let i = 0; i < batch; i++) y[i] = (i + step) % 10;
      // A fresh input tensor every step, as a data loader gives.
      const loss = crossEntropy(model.forward(new Tensor(x.slice(), [batch, 1, 16, 16])), y);
      opt.zeroGrad();
      loss.backward();
      opt.step();
    }
    model.eval();
    model.forward(new Tensor(x.slice(), [batch, 1, 16, 16]));
    gc();
    gc();
    rss.push(process.memoryUsage().rss);
  }
  return rss;
}

if (process.env.VGG_MEMORY_CHILD) {
  const [name, epochs] = process.env.VGG_MEMORY_CHILD.split(":");
  const rss = await runChild(name as "native" | "reference", Number(epochs));
  process.stdout.write(`${JSON.stringify(rss)}\n`);
} else {
  for (const [name, epochs] of [
    ["native", EPOCHS],
    ["reference", 8],
  ] as const) {
    test(`RSS stays flat over ${epochs} epochs of training on the ${name} backend`, (t) => {
      const { NODE_TEST_CONTEXT: _, ...env } = process.env;
      const child = spawnSync(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url)], {
        env: { ...env, VGG_MEMORY_CHILD: `${name}:${epochs}`, VGG_KERNEL_CACHE: "off" },
        encoding: "utf8",
        timeout: 120_000,
      });
      assert.equal(child.status, 0, child.stderr);
      const rss = JSON.parse(child.stdout.trim().split("\n").at(-1) ?? "[]") as number[];
      const mb = rss.map((r) => r / 2 ** 20);
      t.diagnostic(`${name}: RSS per epoch (MB): ${mb.map((m) => m.toFixed(1)).join(", ")}`);
      const after = mb.slice(WARMUP);
      const growth = after[after.length - 1] - after[0];
      const perEpoch = growth / (after.length - 1);
      t.diagnostic(`${name}: growth after warm-up ${growth.toFixed(2)} MB (${perEpoch.toFixed(2)} MB/epoch)`);
      // Generous: allocator noise is a few MB; a per-step leak of one activation would add ~5 MB every
      // epoch, so the maximum after warm-up must also stay near the first post-warm-up sample.
      assert.ok(perEpoch < 1.5, `RSS grows ${perEpoch.toFixed(2)} MB per epoch after warm-up`);
      assert.ok(
        Math.max(...after) - after[0] < 12,
        `RSS rose ${(Math.max(...after) - after[0]).toFixed(1)} MB`,
      );
    });
  }
}
