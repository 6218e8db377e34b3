// The native addon called from several JS threads at once, as `vgg serve --workers n` does: two worker
// threads run the same VGG forward passes side by side, many times, and every logit equals the one the
// main thread computed alone, bit for bit. Once with one kernel thread (each JS thread runs its kernels
// itself), once with a pool of two shared by both (one gets the pool, the other runs serially on its own
// thread), which must not change a bit either. And the server's busy marks (markCoresBusy): while one is
// set every kernel runs serially, which a conv weight gradient split over the batch shows in its rounding;
// and workers asleep at each kernel's start, whose tasks the calling thread takes.
// Run as a worker thread this file computes the passes and posts their logits instead.
import assert from "node:assert/strict";
import { test } from "node:test";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { noGrad } from "../src/autograd.js";
import { backend, setNumThreads } from "../src/backend/index.js";
import { loadNativeAddon, NativeBackend } from "../src/backend/native.js";
import { vgg, vggArchs } from "../src/models/vgg.js";
import { prepackForInference } from "../src/nn/layers.js";
import { manualSeed } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";
import { convGeometry } from "./helpers.js";

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
  test("with the pool's workers asleep at every kernel's start, the calling thread takes their tasks: the same bits", {
    skip: native ? false : "the native addon is not loaded",
    timeout: 120_000,
  }, () => {
    const addon = loadNativeAddon() as Exclude<ReturnType<typeof loadNativeAddon>, Error>;
    setNumThreads(2);
    const polled = passes();
    // No polling: a worker sleeps as soon as it is idle and must be woken for each kernel, which the
    // calling thread often finishes, the worker's task included, before the worker is up.
    addon.setIdleSpin(0);
    try {
      for (let i = 0; i < 3; i++) assert.deepEqual(Buffer.from(passes().buffer), Buffer.from(polled.buffer));
    } finally {
      addon.setIdleSpin(2000);
    }
  });
  test("while a busy mark is set kernels run serially (the one-thread sums), and marks count", {
    skip: loadNativeAddon() instanceof Error ? "the native addon is not loaded" : false,
  }, () => {
    const addon = loadNativeAddon() as Exclude<ReturnType<typeof loadNativeAddon>, Error>;
    const be = new NativeBackend(addon);
    const g = convGeometry(8, 6, 10, 10, 12, 3, 1, 1);
    const x = Float32Array.from({ length: g.n * g.cIn * g.h * g.w }, (_, i) => Math.sin(i * 0.731) * 3);
    const dy = Float32Array.from({ length: g.n * g.cOut * g.outH * g.outW }, (_, i) => Math.cos(i * 0.419));
    const dw = () => {
      const out = new Float32Array(g.cOut * g.cIn * 9);
      be.conv2dBackwardWeight(out, null, dy, x, g);
      return Buffer.from(out.buffer);
    };
    const threads = be.numThreads();
    be.setConvAlgorithm("direct");
    try {
      be.setNumThreads(1);
      const one = dw();
      be.setNumThreads(2);
      const pool = dw();
      // Each thread sums its own images, then the partial sums are added: other bits than one thread's.
      assert.notDeepEqual(pool, one, "the split over the batch should round differently; pick other data");
      addon.markCoresBusy(true);
      assert.deepEqual(dw(), one);
      addon.markCoresBusy(true);
      addon.markCoresBusy(false);
      assert.deepEqual(dw(), one, "one mark of two cleared: still serial");
      addon.markCoresBusy(false);
      assert.deepEqual(dw(), pool);
      // A clear without a mark is ignored: the next mark still holds.
      addon.markCoresBusy(false);
      addon.markCoresBusy(true);
      assert.deepEqual(dw(), one);
      addon.markCoresBusy(false);
      assert.deepEqual(dw(), pool);
      assert.throws(
        () => addon.markCoresBusy(1 as unknown as boolean),
        /Expected the cores' busy mark to be a boolean but received/,
      );
    } finally {
      be.setNumThreads(threads);
      be.setConvAlgorithm("auto");
    }
  });
}
