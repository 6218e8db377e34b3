// The dynamic batcher (src/serve/batcher.ts) with a model it controls: full batches start at once, at most
// `concurrency` run at a time while the rest wait, each request gets its own rows back, and close()
// resolves only once every queued request is answered. No timing: the fake model finishes a batch only
// when the test says so, and the delay's clock is the test's own (mock timers), never the machine's.
// Also the serving layout's defaults (servingLayout: model threads and kernel threads).
import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { mock, test } from "node:test";
import { Batcher, ClientTie, ClosedError } from "../src/serve/batcher.js";
import { servingLayout } from "../src/serve/model-thread.js";

/** A model whose batches finish when told: output row i of a batch is [input[i] * 10]. */
function heldModel() {
  const runs: { n: number; input: Float32Array; finish: () => void }[] = [];
  const run = (input: Float32Array, n: number) =>
    new Promise<Float32Array>((ok) => {
      runs.push({ n, input, finish: () => ok(input.map((v) => v * 10)) });
    });
  return { runs, run };
}

const settle = () => new Promise((ok) => setImmediate(ok));

test("full batches start at once, at most `concurrency` at a time, and each request gets its rows", async () => {
  const model = heldModel();
  const b = new Batcher({
    maxBatch: 2,
    maxDelayMs: 60_000,
    maxQueue: 100,
    inputSize: 1,
    outputSize: 1,
    concurrency: 2,
    run: model.run,
  });
  const answers = Array.from({ length: 7 }, (_, i) => b.submit(Float32Array.of(i), 1));
  await settle();
  // Three full batches are waiting to run; two run, the third waits for a free model thread.
  assert.deepEqual(
    model.runs.map((r) => [...r.input]),
    [
      [0, 1],
      [2, 3],
    ],
  );
  assert.equal(b.running, 2);
  assert.equal(b.depth, 3);
  model.runs[1].finish();
  await settle();
  assert.deepEqual([...model.runs[2].input], [4, 5]);
  assert.equal(b.running, 2);
  // The last image waits for its delay or for company; close() flushes it.
  const closed = b.close();
  model.runs[0].finish();
  await settle();
  assert.deepEqual([...model.runs[3].input], [6]);
  assert.equal(b.running, 2);
  let done = false;
  closed.then(() => (done = true));
  model.runs[2].finish();
  await settle();
  assert.equal(done, false, "close() resolved with a batch still running");
  model.runs[3].finish();
  await closed;
  const got = await Promise.all(answers);
  assert.deepEqual(
    got.map((a) => [...a]),
    [[0], [10], [20], [30], [40], [50], [60]],
  );
  await assert.rejects(b.submit(Float32Array.of(1), 1), ClosedError);
});

test("concurrency must be a positive integer", () => {
  const model = heldModel();
  const o = { maxBatch: 2, maxDelayMs: 1, maxQueue: 4, inputSize: 1, outputSize: 1, run: model.run };
  assert.throws(
    () => new Batcher({ ...o, concurrency: 0 }),
    /Expected concurrency to be a positive integer but received 0/,
  );
  assert.equal(new Batcher(o).running, 0);
});

test("a client that goes away withdraws its waiting images; one gone already is never queued", async () => {
  const model = heldModel();
  const b = new Batcher({
    maxBatch: 4,
    maxDelayMs: 60_000,
    maxQueue: 8,
    inputSize: 1,
    outputSize: 1,
    run: model.run,
  });
  const leaving = new ClientTie();
  const staying = new ClientTie();
  const left = b.submit(Float32Array.of(1, 2), 2, 0, leaving);
  const kept = b.submit(Float32Array.of(3), 1, 0, staying);
  assert.equal(b.depth, 3);
  leaving.gone();
  await assert.rejects(left, /the client went away/);
  assert.equal(b.depth, 1);
  const goneBefore = new ClientTie();
  goneBefore.gone();
  await assert.rejects(b.submit(Float32Array.of(4), 1, 0, goneBefore), /the client went away/);
  assert.equal(b.depth, 1);
  b.flush();
  await settle();
  assert.deepEqual(
    model.runs.map((r) => [...r.input]),
    [[3]],
  );
  model.runs[0].finish();
  assert.deepEqual([...(await kept)], [30]);
  // Going away after the answer changes nothing.
  staying.gone();
  assert.equal(b.depth, 0);
});

test("a batch starts at once when every client that could send has a request waiting or running", async () => {
  const model = heldModel();
  let clients = 3;
  const b = new Batcher({
    maxBatch: 8,
    maxDelayMs: 60_000,
    maxQueue: 16,
    inputSize: 1,
    outputSize: 1,
    run: model.run,
    senders: () => clients,
  });
  const first = [b.submit(Float32Array.of(1), 1), b.submit(Float32Array.of(2), 1)];
  await settle();
  assert.equal(model.runs.length, 0, "a batch started while a client could still send");
  first.push(b.submit(Float32Array.of(3), 1));
  await settle();
  assert.deepEqual(
    model.runs.map((r) => [...r.input]),
    [[1, 2, 3]],
  );
  // A fourth client's request waits for the model thread; three of the four are running.
  clients = 4;
  const later = [b.submit(Float32Array.of(4), 1)];
  await settle();
  assert.equal(model.runs.length, 1);
  // Once the batch is answered its three clients may send again, so the request waits for them...
  model.runs[0].finish();
  await settle();
  assert.equal(model.runs.length, 1, "a batch started while three clients could still send");
  assert.deepEqual(
    (await Promise.all(first)).map((a) => [...a]),
    [[10], [20], [30]],
  );
  // ... and starts once all four have a request waiting.
  later.push(
    b.submit(Float32Array.of(5), 1),
    b.submit(Float32Array.of(6), 1),
    b.submit(Float32Array.of(7), 1),
  );
  await settle();
  assert.deepEqual([...model.runs[1].input], [4, 5, 6, 7]);
  model.runs[1].finish();
  assert.deepEqual(
    (await Promise.all(later)).map((a) => [...a]),
    [[40], [50], [60], [70]],
  );
});

test("the cores count as shared while two batches run, or one runs and requests wait", async () => {
  const model = heldModel();
  const marks: boolean[] = [];
  const b = new Batcher({
    maxBatch: 2,
    maxDelayMs: 60_000,
    maxQueue: 16,
    inputSize: 1,
    outputSize: 1,
    concurrency: 2,
    run: model.run,
    onShared: (shared) => marks.push(shared),
  });
  // One full batch running alone: its kernels may take every core.
  const a = [b.submit(Float32Array.of(1), 1), b.submit(Float32Array.of(2), 1)];
  await settle();
  assert.equal(b.running, 1);
  assert.deepEqual(marks, []);
  // A request waits (for company, then a batch): shared, and told once however many more arrive.
  const c = [b.submit(Float32Array.of(3), 1)];
  assert.deepEqual(marks, [true]);
  c.push(b.submit(Float32Array.of(4), 1));
  await settle();
  // They ran as a second batch: two running, still shared, nothing more said.
  assert.equal(b.running, 2);
  assert.deepEqual(marks, [true]);
  model.runs[0].finish();
  await settle();
  // One batch left and nobody waiting: free again.
  assert.deepEqual(marks, [true, false]);
  model.runs[1].finish();
  await settle();
  assert.deepEqual(marks, [true, false]);
  assert.deepEqual(
    (await Promise.all([...a, ...c])).map((r) => [...r]),
    [[10], [20], [30], [40]],
  );
  // A waiting request withdrawn while a batch runs frees the cores again.
  const d = [b.submit(Float32Array.of(5), 1), b.submit(Float32Array.of(6), 1)];
  await settle();
  const tie = new ClientTie();
  const gone = b.submit(Float32Array.of(7), 1, 0, tie);
  assert.deepEqual(marks, [true, false, true]);
  tie.gone();
  await assert.rejects(gone, /went away/);
  assert.deepEqual(marks, [true, false, true, false]);
  model.runs[2].finish();
  await Promise.all(d);
  assert.deepEqual(marks, [true, false, true, false]);
});

test("the delay runs from the later of a request's arrival and a model thread coming free for it", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    let now = 0;
    const advance = (ms: number) => {
      now += ms;
      mock.timers.tick(ms);
    };
    const model = heldModel();
    const b = new Batcher({
      maxBatch: 4,
      maxDelayMs: 5,
      maxQueue: 8,
      inputSize: 1,
      outputSize: 1,
      run: model.run,
      clock: () => now,
    });
    const a = b.submit(Float32Array.of(1), 1);
    advance(4);
    assert.equal(model.runs.length, 0, "the batch started before its delay");
    advance(1);
    assert.equal(model.runs.length, 1);
    // The second request arrives while the only model thread is busy and waits out the whole batch...
    advance(1);
    const c = b.submit(Float32Array.of(2), 1);
    advance(94);
    model.runs[0].finish();
    assert.deepEqual([...(await a)], [10]);
    // ... then gives the next batch the delay to fill, from the moment the thread came free.
    advance(4);
    assert.equal(model.runs.length, 1, "the batch started before the delay from the free thread");
    const d = b.submit(Float32Array.of(3), 1);
    advance(1);
    assert.deepEqual([...model.runs[1].input], [2, 3]);
    model.runs[1].finish();
    assert.deepEqual([...(await c), ...(await d)], [20, 30]);
  } finally {
    mock.timers.reset();
  }
});

test("the serving layout: two model threads sharing every core by default, one kernel thread each with --workers", () => {
  const cores = availableParallelism();
  const saved = process.env.VGG_NUM_THREADS;
  delete process.env.VGG_NUM_THREADS;
  try {
    assert.deepEqual(servingLayout(), { workers: cores >= 2 ? 2 : 1, threads: cores });
    assert.deepEqual(servingLayout(undefined, 1), { workers: cores >= 2 ? 2 : 1, threads: 1 });
    assert.deepEqual(servingLayout(3), { workers: 3, threads: 1 });
    assert.deepEqual(servingLayout(1, 2), { workers: 1, threads: 2 });
    process.env.VGG_NUM_THREADS = "3";
    assert.deepEqual(servingLayout(2), { workers: 2, threads: 3 });
  } finally {
    if (saved === undefined) delete process.env.VGG_NUM_THREADS;
    else process.env.VGG_NUM_THREADS = saved;
  }
});
