// The parts of data-parallel training that need no mpirun: the shard split, dropout drawn for a whole
// batch and kept per shard, backward's hook that reports each gradient as soon as it is final, and the
// message when --distributed is asked for without Open MPI.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { backward } from "../src/autograd.js";
import { type BackendName, setBackend } from "../src/backend/index.js";
import { shardRange } from "../src/distributed/data-parallel.js";
import { Linear } from "../src/nn/layers.js";
import { dropout, setDropoutBatchShard } from "../src/ops/activation.js";
import { add, sum } from "../src/ops/elementwise.js";
import { Generator } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";

test("shards cover every row of a batch once, in order, rank 0 never empty", () => {
  for (const size of [1, 2, 3, 4, 7])
    for (const n of [1, 2, 3, 5, 58, 64, 128]) {
      let next = 0;
      for (let rank = 0; rank < size; rank++) {
        const { first, count } = shardRange(n, rank, size);
        assert.equal(first, next, `n ${n}, rank ${rank} of ${size}`);
        assert.ok(count >= 0);
        next += count;
      }
      assert.equal(next, n);
      assert.ok(shardRange(n, 0, size).count >= 1);
    }
  assert.deepEqual(shardRange(128, 1, 3), { first: 43, count: 43 });
});

for (const name of ["reference", "native"] as BackendName[])
  test(`dropout of a shard keeps the whole batch's mask rows and advances the generator alike (${name})`, () => {
    setBackend(name);
    const rows = 7;
    const width = 33;
    const x = new Tensor(new Float32Array(rows * width).fill(1), [rows, width]);
    const whole = dropout(x, 0.4, true, new Generator(5)).data.slice();
    for (const [first, count] of [
      [0, 3],
      [3, 2],
      [5, 2],
    ]) {
      const g = new Generator(5);
      const part = new Tensor(x.data.subarray(first * width, (first + count) * width), [count, width]);
      setDropoutBatchShard({ first, count, total: rows });
      try {
        const y = dropout(part, 0.4, true, g);
        assert.deepEqual(
          Array.from(y.data),
          Array.from(whole.subarray(first * width, (first + count) * width)),
        );
      } finally {
        setDropoutBatchShard(null);
      }
      const after = new Generator(5);
      dropout(x, 0.4, true, after);
      assert.deepEqual(g.getState(), after.getState());
    }
    setBackend("native");
  });

test("backward reports each leaf once, when its gradient is final (also a parameter used twice)", () => {
  const a = new Linear(3, 4);
  const b = new Linear(4, 4);
  const x = new Tensor(
    Float32Array.from({ length: 6 }, (_, i) => i / 6 - 0.4),
    [2, 3],
  );
  // b is applied twice: its gradient is final only after its first use's backward too.
  const h = b.forward(a.forward(x));
  const y = add(b.forward(h), h);
  const loss = sum(y);
  const seen: { leaf: unknown; grad: number[] }[] = [];
  backward(loss, undefined, {
    onLeafGradient: (leaf) => seen.push({ leaf, grad: Array.from((leaf as Tensor).peekGrad()!.data) }),
  });
  const params = [...a.parameters(), ...b.parameters()];
  assert.equal(seen.length, params.length);
  for (const p of params) {
    const reports = seen.filter((s) => s.leaf === p);
    assert.equal(reports.length, 1);
    assert.deepEqual(reports[0].grad, Array.from(p.peekGrad()!.data));
  }
});

test("--distributed without the MPI addon says how to install Open MPI", () => {
  const r = spawnSync(process.execPath, ["bin/vgg", "train", "--distributed", "--epochs", "1"], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, VGG_MPI_ADDON: "/nonexistent/vgg_mpi.node" },
  });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /--distributed needs Open MPI, and vgg-ts's MPI addon is not built/);
  assert.match(r.stderr, /apt-get install openmpi-bin libopenmpi-dev/);
  assert.match(r.stderr, /mpirun -np N vgg train --distributed/);
});
