// The buffer pool (src/memory.ts) must be invisible: the same results with reuse on and off, and no
// tensor a caller holds ever changes when its memory could have been reused.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { noGrad } from "../src/autograd.js";
import { give, poolStats, setPoolLimit, takeFloat32 } from "../src/memory.js";
import { vgg } from "../src/models/vgg.js";
import { Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU } from "../src/nn/layers.js";
import { Sequential } from "../src/nn/sequential.js";
import * as F from "../src/ops/index.js";
import { SGD } from "../src/optim/sgd.js";
import { Generator, manualSeed } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";

// Activations of 8 x 8 x 48 x 48 floats (590 KB) are above the pool's 256 KB threshold.
function net(): Sequential {
  return new Sequential(
    new Sequential(new Conv2d(3, 8, 3, { padding: 1 }), new ReLU(), new MaxPool2d(2)),
    new Sequential(new Conv2d(8, 16, 3, { padding: 1 }), new ReLU(), new Conv2d(16, 16, 3, { padding: 1 })),
    new ReLU(),
    new MaxPool2d(2),
    new Flatten(),
    new Linear(16 * 12 * 12, 64),
    new ReLU(),
    new Dropout(0.5),
    new Linear(64, 10),
  );
}

function batch(seed: number): [Tensor, Int32Array] {
  const g = new Generator(seed);
  const x = new Tensor(
    Float32Array.from({ length: 8 * 3 * 48 * 48 }, () => g.random() * 2 - 1),
    [8, 3, 48, 48],
  );
  return [x, Int32Array.from({ length: 8 }, () => g.int(10))];
}

/** Trains a few steps and runs inference; returns a digest of everything a caller could see. */
function run(): { digest: string; heldIntact: boolean } {
  manualSeed(7);
  const model = net();
  const opt = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
  const hash = createHash("sha256");
  const add = (a: Float32Array) => hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  let held: Tensor | null = null;
  let heldCopy: Float32Array | null = null;
  let heldGrad: Tensor | null = null;
  let heldGradCopy: Float32Array | null = null;
  for (let step = 0; step < 4; step++) {
    const [x, y] = batch(step);
    model.train();
    const logits = model.forward(x);
    if (step === 0) {
      held = logits;
      heldCopy = logits.data.slice();
    }
    const loss = F.crossEntropy(logits, y);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    add(logits.data);
    // Gradients read by the caller keep their memory; those never read are reused after zeroGrad.
    if (step % 2 === 1) for (const p of model.parameters()) add(p.grad!.data);
    if (step === 1) {
      heldGrad = model.parameters()[0].grad;
      heldGradCopy = heldGrad!.data.slice();
    }
    model.eval();
    add(noGrad(() => model.forward(x)).data);
  }
  for (const p of model.parameters()) add(p.data);
  const same = (t: Tensor | null, copy: Float32Array | null) =>
    t !== null && copy !== null && t.data.every((v, i) => Object.is(v, copy[i]));
  const heldIntact = same(held, heldCopy) && same(heldGrad, heldGradCopy);
  return { digest: hash.digest("hex"), heldIntact };
}

if (process.env.VGG_POOL_CHILD) {
  console.log(JSON.stringify(run()));
} else {
  test("training and inference give bit-identical results with buffer reuse on and off", () => {
    const child = (pool: string) => {
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
        env: { ...process.env, VGG_POOL_CHILD: "1", VGG_BUFFER_POOL: pool },
        encoding: "utf8",
        timeout: 300_000, // a hang guard: a hang fails with its output
      });
      assert.equal(r.status, 0, `${r.error ?? ""}${r.stderr}`);
      return JSON.parse(r.stdout) as { digest: string; heldIntact: boolean };
    };
    const on = child("1");
    const off = child("0");
    assert.equal(on.heldIntact, true, "an output the caller held was overwritten");
    assert.equal(off.heldIntact, true);
    assert.equal(on.digest, off.digest);
  });

  test("buffers come back to the pool and outputs a caller holds are never reused", () => {
    const before = poolStats().freeBuffers;
    const r = run();
    assert.equal(r.heldIntact, true);
    assert.ok(poolStats().freeBuffers > before, "no buffer was returned to the pool");
  });

  test("a view the caller receives keeps its memory (Sequential ending in Flatten)", () => {
    manualSeed(1);
    const model = new Sequential(new Conv2d(3, 8, 3, { padding: 1 }), new ReLU(), new Flatten());
    const [x] = batch(1);
    const out = model.forward(x);
    const copy = out.data.slice();
    F.sum(out).backward();
    for (let i = 0; i < 3; i++) {
      const o = model.forward(batch(i + 2)[0]);
      F.sum(o).backward();
      noGrad(() => model.forward(batch(i + 5)[0]));
    }
    assert.deepEqual(out.data, copy);
  });

  test("block outputs stay intact after later forwards and backwards", () => {
    manualSeed(2);
    const model = vgg(
      [
        [1, 8],
        [1, 8],
      ],
      { inChannels: 3, inputSize: 48, classifierWidth: 16, numClasses: 4 },
    );
    const [x] = batch(3);
    const blocks = noGrad(() => model.blockOutputs(x));
    const copies = blocks.map((b) => b.data.slice());
    for (let i = 0; i < 3; i++) {
      const [xi, yi] = batch(10 + i);
      F.crossEntropy(
        model.forward(xi),
        Int32Array.from(yi, (v) => v % 4),
      ).backward();
      noGrad(() => model.forward(xi));
    }
    for (const [i, b] of blocks.entries()) assert.deepEqual(b.data, copies[i]);
  });
}

// (Not in the child process the first test starts, which prints only its JSON.)
if (!process.env.VGG_POOL_CHILD)
  test("at its limit the pool drops the sizes asked for least recently, not the ones in use", () => {
    const MB = 1 << 20;
    const old = setPoolLimit(4 * MB);
    try {
      // An epoch's last batch leaves buffers of a size that is not asked for again...
      const stale = [takeFloat32(MB / 4), takeFloat32(MB / 4), takeFloat32(MB / 4)];
      for (const a of stale) give(a);
      const held = poolStats().freeBytes;
      assert.ok(held >= 3 * MB, `expected the three 1 MB buffers in the pool, found ${held} bytes`);
      // ...and the next steps' buffers replace them instead of being dropped.
      const live = [takeFloat32((3 * MB) / 8), takeFloat32((3 * MB) / 8)];
      for (const a of live) give(a);
      const reused = takeFloat32((3 * MB) / 8);
      assert.ok(
        live.some((a) => a.buffer === reused.buffer),
        "a buffer of the size in use was dropped while stale ones were kept",
      );
      give(reused);
      assert.ok(
        poolStats().freeBytes <= 4 * MB,
        `pool holds ${poolStats().freeBytes} bytes over its 4 MB limit`,
      );
      // A stale size coming back does not push out the newer one.
      const [again] = [takeFloat32((3 * MB) / 8)];
      give(takeFloat32(MB / 4));
      give(again);
      assert.equal(takeFloat32((3 * MB) / 8).buffer, again.buffer);
    } finally {
      setPoolLimit(old);
    }
  });

if (!process.env.VGG_POOL_CHILD)
  test("a request takes a free buffer up to twice its size (viewing its first bytes), none larger", () => {
    const MB = 1 << 20;
    const big = takeFloat32(MB); // 4 MB
    give(big);
    // A batch of 20 in a batch of 32's buffer: the same memory, a view of the length asked for.
    const smaller = takeFloat32((MB * 20) / 32);
    assert.equal(smaller.buffer, big.buffer);
    assert.equal(smaller.length, (MB * 20) / 32);
    assert.equal(smaller.byteOffset, 0);
    give(smaller);
    // Under half its size: a buffer of its own, and the large one stays free for the large request.
    const small = takeFloat32(MB / 4);
    assert.notEqual(small.buffer, big.buffer);
    assert.equal(small.buffer.byteLength, MB);
    assert.equal(takeFloat32(MB).buffer, big.buffer);
    // The exact size first, even when a larger one is free too.
    give(small);
    const pair = [takeFloat32(MB / 2), takeFloat32(MB / 2)];
    for (const a of pair) give(a);
    give(big);
    const exact = takeFloat32(MB / 2);
    assert.ok(pair.some((a) => a.buffer === exact.buffer));
  });
