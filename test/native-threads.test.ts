// The native addon called from several JS threads at once, as `vgg serve --workers n` does: two worker
// threads run the same VGG forward passes side by side, many times, and every logit equals the one the
// main thread computed alone, bit for bit. Once with one kernel thread (each JS thread runs its kernels
// itself), once with a pool of two shared by both (one gets the pool, the other runs serially on its own
// thread), which must not change a bit either.
// Run as a worker thread this file computes the passes and posts their logits instead.
import assert from "node:assert/strict";
import { test } from "node:test";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { noGrad } from "../src/autograd.js";
import { backend, setNumThreads } from "../src/backend/index.js";
import { vgg, vggArchs } from "../src/models/vgg.js";
import { prepackForInference } from "../src/nn/layers.js";
import { manualSeed } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";

const ROUNDS = 24;
/** Batch sizes the rounds cycle through: batch 1, odd, and more than 4 rows (the packed Linear path). */
const BATCHES = [1, 5, 8];

/** The logits of ROUNDS forward passes of a seeded small VGG on seeded inputs, concatenated. */
function passes(): Float32Array {
  manualSeed(3);
  const model = prepackForInference(
    vgg(vggArchs.vgg11, { widthRatio: 8, inChannels: 1, inputSize: 32, numClasses: 10, classifierWidth: 72 }),
  );
  const out: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const n = BATCHES[r % BATCHES.length];
    const x = new Float32Array(n * 32 * 32);
    for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37 + r);
    const y = noGrad(() => model.forward(new Tensor(x, [n, 1, 32, 32])));
    out.push(...y.data);
  }
  return Float32Array.from(out);
}

if (!isMainThread) {
  setNumThreads((workerData as { threads: number }).threads);
  parentPort?.postMessage(passes());
} else {
  const native = backend().name === "native";
  for (const threads of [1, 2])
    test(`two JS threads running the addon at once, ${threads} kernel thread(s), match one thread alone bit for bit`, {
      skip: native ? false : "the native addon is not loaded",
      timeout: 120_000,
    }, async () => {
      setNumThreads(threads);
      const alone = passes();
      const run = () =>
        new Promise<Float32Array>((ok, fail) => {
          const w = new Worker(new URL(import.meta.url), { workerData: { threads } });
          w.once("message", ok);
          w.once("error", fail);
        });
      const [a, b] = await Promise.all([run(), run()]);
      for (const got of [a, b]) assert.deepEqual(Buffer.from(got.buffer), Buffer.from(alone.buffer));
    });
}
