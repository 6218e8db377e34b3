import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { after, test } from "node:test";
import { type Batch, DataLoader, type DataLoaderOptions, type Dataset } from "../src/data/loader.js";
import { toFloat } from "../src/data/transforms.js";

function makeDataset(count: number, rows: number, cols: number): Dataset {
  const images = Uint8Array.from({ length: count * rows * cols }, (_, i) => (i * 131 + (i >> 5)) % 256);
  const labels = Uint8Array.from({ length: count }, (_, i) => (i * 7) % 10);
  return { images, labels, count, rows, cols };
}

const small = makeDataset(10, 6, 5);
const loaders: DataLoader[] = [];
after(async () => {
  for (const l of loaders) await l.close();
});

function loader(dataset: Dataset, options: DataLoaderOptions): DataLoader {
  const l = new DataLoader(dataset, options);
  loaders.push(l);
  return l;
}

async function collect(batches: AsyncIterable<Batch>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of batches) out.push(b);
  return out;
}

const flatIndices = (bs: Batch[]) => bs.flatMap((b) => [...b.indices]);

test("batches cover every example once, the last partial batch included", async () => {
  for (const workers of [0, 1] as const) {
    const l = loader(small, { batchSize: 4, shuffle: true, seed: 3, workers });
    assert.equal(l.length, 3);
    const bs = await collect(l);
    assert.deepEqual(
      bs.map((b) => b.shape),
      [
        [4, 1, 6, 5],
        [4, 1, 6, 5],
        [2, 1, 6, 5],
      ],
    );
    assert.deepEqual(
      [...flatIndices(bs)].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    for (const b of bs) {
      assert.equal(b.x.length, b.shape[0] * 30);
      // Labels and pixels belong to the examples named by `indices`.
      b.indices.forEach((idx, k) => {
        assert.equal(b.y[k], small.labels[idx]);
        const expected = toFloat(small.images.subarray(idx * 30, (idx + 1) * 30));
        assert.deepEqual(b.x.subarray(k * 30, (k + 1) * 30), expected);
      });
    }
  }
});

test("without shuffle the order is file order; limit keeps the first N examples", async () => {
  const bs = await collect(loader(small, { batchSize: 3, limit: 7 }));
  assert.deepEqual(flatIndices(bs), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(
    bs.map((b) => b.indices.length),
    [3, 3, 1],
  );
  const big = loader(small, { batchSize: 3, limit: 1000 });
  assert.equal(big.size, 10);
});

test("shuffling is a function of (seed, epoch): same seed same order, new epoch new order", async () => {
  const big = makeDataset(200, 2, 2);
  const a = loader(big, { batchSize: 32, shuffle: true, seed: 7, workers: 0 });
  const epoch0 = flatIndices(await collect(a));
  const epoch1 = flatIndices(await collect(a));
  assert.notDeepEqual(epoch0, epoch1);
  assert.deepEqual(
    [...epoch0].sort((x, y) => x - y),
    [...epoch1].sort((x, y) => x - y),
  );
  // A fresh loader with the same seed repeats epoch 0; resumed at epoch 1 it repeats epoch 1.
  const b = loader(big, { batchSize: 32, shuffle: true, seed: 7, workers: 0 });
  assert.deepEqual(flatIndices(await collect(b)), epoch0);
  const resumed = loader(big, { batchSize: 32, shuffle: true, seed: 7, workers: 0 });
  resumed.setEpoch(1);
  assert.deepEqual(flatIndices(await collect(resumed)), epoch1);
  // Another seed, another order.
  const c = loader(big, { batchSize: 32, shuffle: true, seed: 8, workers: 0 });
  assert.notDeepEqual(flatIndices(await collect(c)), epoch0);
});

test("worker and synchronous paths produce identical batches (resize, augment, normalize)", async () => {
  const data = makeDataset(37, 28, 28);
  const options: DataLoaderOptions = {
    batchSize: 8,
    shuffle: true,
    seed: 11,
    resize: [40, 24],
    augment: true,
    normalize: { mean: 0.286, std: 0.353 },
  };
  const sync = loader(data, { ...options, workers: 0 });
  const threaded = loader(data, { ...options, workers: 1 });
  for (let epoch = 0; epoch < 2; epoch++) {
    const s = await collect(sync);
    const t = await collect(threaded);
    assert.equal(s.length, 5);
    assert.equal(t.length, 5);
    for (let i = 0; i < s.length; i++) {
      assert.deepEqual(t[i].shape, s[i].shape);
      assert.deepEqual(t[i].indices, s[i].indices);
      assert.deepEqual(t[i].y, s[i].y);
      assert.deepEqual(t[i].x, s[i].x, `epoch ${epoch} batch ${i}`);
    }
  }
  // Augmentation is seeded per (seed, epoch, batch): epochs differ, reruns repeat.
  const again = loader(data, { ...options, workers: 0 });
  const e0 = await collect(again.batches(0));
  const e0b = await collect(again.batches(0));
  const e1 = await collect(again.batches(1));
  assert.deepEqual(e0[0].x, e0b[0].x);
  assert.notDeepEqual(e0[0].x, e1[0].x);
});

test("a consumer may stop early; the next epoch still works", async () => {
  const l = loader(makeDataset(64, 8, 8), { batchSize: 4, shuffle: true, workers: 1 });
  for await (const b of l) {
    assert.equal(b.index, 0);
    break;
  }
  const bs = await collect(l);
  assert.equal(bs.length, 16);
  assert.ok(bs.every((b) => b.epoch === 1));
});

test("invalid options are rejected with clear messages", () => {
  assert.throws(() => new DataLoader(small, { batchSize: 0 }), {
    message: "Expected batchSize to be a positive integer but received 0",
  });
  assert.throws(() => new DataLoader(small, { batchSize: 2, resize: [28, 0] }), {
    message: "Expected the resize width to be a positive integer but received 0",
  });
  assert.throws(() => new DataLoader(small, { batchSize: 2, limit: -1 }), {
    message: "Expected limit to be an integer >= 0 but received -1",
  });
  assert.throws(() => new DataLoader(small, { batchSize: 2, augment: { padding: 1.5 } }), {
    message: "Expected augmentation padding to be an integer >= 0 but received 1.5",
  });
  assert.throws(() => new DataLoader(small, { batchSize: 2, normalize: { mean: 0, std: -1 } }), {
    message: "Expected a positive finite normalisation std but received -1",
  });
  assert.throws(() => new DataLoader({ ...small, count: 11 }, { batchSize: 2 }), {
    message: "Expected 11 x 6 x 5 = 330 image bytes but received 300",
  });
});

/**
 * CPU time this thread (the main one, whose id is the process id) has used, in clock ticks, from Linux's
 * /proc: work done, unlike wall time, whatever the machine's speed or load.
 */
function mainThreadTicks(): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}
const noProc = existsSync(`/proc/self/task/${process.pid}/stat`)
  ? false
  : "needs Linux's /proc/self/task/<tid>/stat to count the main thread's CPU time";

test("with a worker, the 224x224 batches are prepared off the consumer's thread", {
  skip: noProc,
}, async () => {
  const options: DataLoaderOptions = { batchSize: 128, resize: 224, augment: true, shuffle: true };
  // The main thread's CPU time for n batches, from asking to receiving (waiting for a worker is idle).
  const cost = async (workers: 0 | 1, n: number) => {
    const l = loader(makeDataset(128 * n, 28, 28), { ...options, workers });
    const before = mainThreadTicks();
    let seen = 0;
    for await (const b of l) {
      assert.equal(b.x.length, 128 * 224 * 224);
      seen++;
    }
    assert.equal(seen, n);
    return mainThreadTicks() - before;
  };
  // Enough batches that preparing them inline costs at least 25 ticks, however fast the machine.
  let n = 2;
  let inline = await cost(0, n);
  while (inline < 25 && n < 256) inline = await cost(0, (n *= 2));
  const threaded = await cost(1, n);
  console.log(
    `${n} batches of 128 at 224x224: ${inline} ticks of the main thread inline, ${threaded} with a worker`,
  );
  // Inline, the thread does all the resizing and augmenting; with a worker it only receives the batches.
  assert.ok(
    threaded * 4 <= inline,
    `with a worker the main thread still spent ${threaded} of ${inline} ticks`,
  );
});
