// The training API: fit() runs a whole training run as `vgg train` does, with Keras-style callbacks and an
// AbortSignal, on small synthetic Fashion-MNIST-format files this test writes itself.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { gzipSync } from "node:zlib";
import { FASHION_MNIST_FILES } from "../src/data/fashion-mnist.js";
import { encodeIdx } from "../src/data/idx.js";
import type { TrainCallback } from "../src/train/events.js";
import { FIT_DEFAULTS, type FitOptions, fit, resolveFitOptions } from "../src/train/fit.js";

const root = mkdtempSync(join(tmpdir(), "vgg-fit-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** 16x16 pictures whose class is the quarter that holds a bright square: 4 classes, quickly learnt. */
function writeData(): string {
  const dir = join(root, "data");
  mkdirSync(dir, { recursive: true });
  for (const [split, n] of [
    ["train", 96],
    ["test", 32],
  ] as const) {
    const images = new Uint8Array(n * 256);
    const labels = Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) % 4);
    for (let i = 0; i < n; i++) {
      const [r0, c0] = [(labels[i] >> 1) * 8, (labels[i] & 1) * 8];
      for (let r = 1; r < 7; r++) for (let c = 1; c < 7; c++) images[i * 256 + (r0 + r) * 16 + c0 + c] = 200;
    }
    const files = FASHION_MNIST_FILES[split];
    writeFileSync(join(dir, `${files.images}.gz`), gzipSync(encodeIdx([n, 16, 16], images)));
    writeFileSync(join(dir, `${files.labels}.gz`), gzipSync(encodeIdx([n], labels)));
  }
  return dir;
}

const dataDir = writeData();
const TINY: Partial<FitOptions> = {
  ...{ arch: "1x4,1x8", ratio: 1, resize: 16, classifierWidth: 16, classes: [0, 1, 2, 3] },
  ...{ dataDir, download: false, batchSize: 16, epochs: 3, lr: 0.1, momentum: 0.9, threads: 1 },
};
const quiet = () => undefined;

test("fit's defaults are the d2l chapter's recipe", () => {
  const o = resolveFitOptions({});
  assert.equal(o.arch, "vgg11");
  assert.equal(o.ratio, 4);
  assert.equal(o.resize, 224);
  assert.equal(o.epochs, 10);
  assert.equal(o.batchSize, 128);
  assert.equal(o.lr, 0.05);
  assert.equal(o.momentum, 0);
  assert.equal(o.seed, 0);
  assert.equal(resolveFitOptions({ layout: "torchvision" }).ratio, 1);
  assert.equal(resolveFitOptions({ inputSize: 32 }).resize, 32);
  assert.equal(FIT_DEFAULTS.init, "xavier");
});

test("fit trains, calls every callback in order, and writes the run's files", {
  timeout: 120_000,
}, async () => {
  const out = join(root, "full");
  const calls: string[] = [];
  let batches = 0;
  const cb: TrainCallback = {
    trainBegin: (run) => calls.push(`begin ${run.stepsPerEpoch} ${run.trainSize}`),
    epochBegin: (e) => calls.push(`epoch ${e}`),
    batchEnd: () => {
      batches++;
    },
    epochEnd: (s) => calls.push(`end ${s.epoch}/${s.epochs}`),
  };
  const r = await fit({ ...TINY, out }, { callbacks: [cb], log: quiet });
  assert.equal(r.status, "completed");
  assert.deepEqual(calls, ["begin 6 96", "epoch 0", "end 1/3", "epoch 1", "end 2/3", "epoch 2", "end 3/3"]);
  assert.equal(batches, 18);
  assert.ok(r.last && r.last.testAcc > 0.5, `test accuracy ${r.last?.testAcc} on 4 easy classes`);
  assert.equal(r.history.filter((h) => h.type === "epoch").length, 3);
  for (const f of [
    "checkpoint.safetensors",
    "model.safetensors",
    "metrics.jsonl",
    "curves.svg",
    "curves.png",
  ])
    assert.ok(existsSync(join(out, f)), f);
});

test("an aborted fit keeps its last epoch, and resuming it ends with the uninterrupted weights", {
  timeout: 180_000,
}, async () => {
  const full = await fit({ ...TINY, out: join(root, "ref") }, { log: quiet });
  const out = join(root, "cut");
  const abort = new AbortController();
  // Keyed on progress: abort after the third batch of the second epoch, whatever the machine's speed.
  const cut: TrainCallback = {
    batchEnd: (r) => {
      if (r.epoch === 1 && r.batch === 2) abort.abort();
    },
  };
  const first = await fit({ ...TINY, out }, { callbacks: [cut], signal: abort.signal, log: quiet });
  assert.equal(first.status, "interrupted");
  assert.equal(first.last?.epoch, 1);
  const lines: string[] = [];
  const second = await fit({ resume: out }, { log: (l) => lines.push(l) });
  assert.equal(second.status, "completed");
  assert.ok(lines.includes("Resuming after epoch 1"), lines.join("\n"));
  assert.equal(second.options.arch, TINY.arch, "a resumed run takes its options from the saved run");
  const a = full.model.stateDict();
  const b = second.model.stateDict();
  assert.ok(a.size > 0);
  for (const [k, t] of a) assert.deepEqual(b.get(k)?.data, t.data, k);
  const again = await fit({ resume: out }, { log: quiet });
  assert.equal(again.status, "nothing-to-do");
});
