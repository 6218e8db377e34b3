// `mpirun -np N vgg train --distributed` on this one machine: N processes of one thread compute what one
// process computes for the same global batch (dropout and shuffling on), a run resumes on another number
// of processes, and bad arguments stop every rank before training.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { locateFashionMnist } from "../src/data/fashion-mnist.js";
import { readCheckpoint } from "../src/train/checkpoint.js";
import { writeSyntheticFashionMnist } from "./helpers.js";
import { mpirunVgg, mpiSkip, worstRelativeDifference } from "./mpi-helpers.js";

const realData = locateFashionMnist("train") !== undefined && locateFashionMnist("test") !== undefined;
const work = mkdtempSync(join(tmpdir(), "vgg-mpi-"));
// Real Fashion-MNIST where it is installed (CI), else a small synthetic set in the same IDX files.
const data = realData
  ? []
  : ["--data-dir", writeSyntheticFashionMnist(join(work, "data"), { train: 250, test: 100 }).dir];

// The d2l recipe (VGG-11/4, dropout 0.5 in the classifier, SGD lr 0.05 without momentum) at 32x32: 250
// examples in batches of 64 make 4 steps an epoch, the last one short (58 rows: 29/29, 20/19/19).
// (With momentum 0.9 the summation-order rounding grows over 8 steps to ~1e-3 of the smallest tensors,
// as it does between 1 and 2 threads of one process; without it the runs stay within ~2e-7.)
const recipe = [
  "train",
  "--resize",
  "32",
  "--batch-size",
  "64",
  "--limit-train",
  "250",
  "--limit-test",
  "100",
  "--lr",
  "0.05",
  "--threads",
  "1",
  "--no-download",
  ...data,
];

// Each 3x3 conv's algorithm (Winograd F(2x2), F(4x4) or im2col) is a timed choice per shape, so a shard's
// batch size may get another algorithm than the whole batch, with other rounding that a max-pool or ReLU
// decision then amplifies; the comparison pins the direct algorithm, the same for every batch size.
const SAME_KERNELS = { VGG_CONV_ALGO: "direct" };

function train(np: number, out: string, ...extra: string[]) {
  const r = mpirunVgg(np, [...recipe, "--distributed", "--out", out, ...extra], { env: SAME_KERNELS });
  assert.equal(r.status, 0, `mpirun -np ${np} failed (${r.status}, ${r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

function epochLosses(out: string): number[] {
  return readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((m) => m.type === "epoch")
    .map((m) => m.trainLoss);
}

const runs = new Map<number, string>();
function runOf(np: number): string {
  let out = runs.get(np);
  if (!out) {
    out = join(work, `np${np}`);
    train(np, out, "--epochs", "2");
    runs.set(np, out);
  }
  return out;
}

test("2 and 3 processes of 1 thread equal 1 process with the same global batch (8 steps)", {
  skip: mpiSkip,
  timeout: 900_000,
}, () => {
  const one = runOf(1);
  for (const np of [2, 3]) {
    const many = runOf(np);
    const { worst, name } = worstRelativeDifference(
      join(one, "model.safetensors"),
      join(many, "model.safetensors"),
    );
    console.log(`np ${np}: worst relative weight difference ${worst.toExponential(2)} (${name})`);
    assert.ok(worst <= 1e-5, `np ${np}: ${name} differs by ${worst} relative to 1 process`);
    const [a, b] = [epochLosses(one), epochLosses(many)];
    assert.equal(b.length, 2);
    for (let i = 0; i < a.length; i++)
      assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * Math.abs(a[i]), `epoch ${i + 1} loss ${a[i]} vs ${b[i]}`);
  }
});

test("a run checkpointed on 2 processes resumes on 3 and ends where 1 process does", {
  skip: mpiSkip,
  timeout: 900_000,
}, () => {
  const out = join(work, "resumed");
  train(2, out, "--epochs", "1");
  assert.equal(readCheckpoint(join(out, "checkpoint.safetensors")).state.epoch, 1);
  const epoch1 = join(work, "epoch1.safetensors");
  writeFileSync(epoch1, readFileSync(join(out, "model.safetensors")));
  const r = train(3, "ignored", "--resume", out, "--epochs", "2");
  assert.match(r.stdout, /Resuming after epoch 1/);
  assert.match(r.stdout, /3 MPI processes x cpu/);
  const one = runOf(1);
  const { worst, name } = worstRelativeDifference(
    join(one, "model.safetensors"),
    join(out, "model.safetensors"),
  );
  assert.ok(worst <= 1e-5, `${name} differs by ${worst} relative to 1 process`);
  // The second epoch moved the weights far beyond that tolerance, so the comparison means something.
  const moved = worstRelativeDifference(join(one, "model.safetensors"), epoch1).worst;
  assert.ok(moved > 1e-3, `the second epoch changed the weights by only ${moved}`);
});

test("bad arguments stop every rank before training, with the reason", {
  skip: mpiSkip,
  timeout: 300_000,
}, () => {
  // The same error on every rank: each prints it.
  const missing = mpirunVgg(2, [...recipe, "--distributed", "--resume", join(work, "no-such-run")]);
  assert.notEqual(missing.status, 0);
  const lines = `${missing.stdout}${missing.stderr}`.match(/vgg: ENOENT[^\n]*no-such-run/g) ?? [];
  assert.equal(lines.length, 2, missing.stdout + missing.stderr);
  // An error on rank 0 only (only it writes the output folder): rank 1 says which rank failed and why.
  const file = join(work, "a-file");
  writeFileSync(file, "");
  const r = mpirunVgg(2, [...recipe, "--distributed", "--epochs", "1", "--out", file]);
  assert.notEqual(r.status, 0);
  const all = r.stdout + r.stderr;
  assert.match(all, /vgg: Cannot write to the output folder/);
  assert.match(all, /vgg: the job cannot start: rank 0 failed: Cannot write to the output folder/);
  assert.doesNotMatch(all, /^Training /m);
  // Several processes without --distributed would each train a copy into the same folder.
  const plain = mpirunVgg(2, [...recipe, "--epochs", "1", "--out", join(work, "plain")]);
  assert.notEqual(plain.status, 0);
  assert.match(plain.stderr + plain.stdout, /launched by mpirun as 2 processes but without --distributed/);
});
