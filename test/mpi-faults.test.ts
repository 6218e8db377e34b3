// Faults under `mpirun -np 2 vgg train --distributed`: a rank killed with SIGKILL mid-epoch, and a rank
// that stops answering, each end the whole job with a clear message on the surviving rank while the last
// checkpoint stays whole. Both are keyed on observed progress (an epoch saved, then a batch of the next
// one in metrics.jsonl), never on delays.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { locateFashionMnist } from "../src/data/fashion-mnist.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { readCheckpoint } from "../src/train/checkpoint.js";
import { writeSyntheticFashionMnist } from "./helpers.js";
import { mpirunArgs, mpiSkip, rankPid } from "./mpi-helpers.js";

const realData = locateFashionMnist("train") !== undefined && locateFashionMnist("test") !== undefined;
const work = mkdtempSync(join(tmpdir(), "vgg-mpi-faults-"));
const data = realData
  ? []
  : ["--data-dir", writeSyntheticFashionMnist(join(work, "data"), { train: 1024, test: 64 }).dir];

// Many short steps (64 per epoch) and more epochs than the test waits for.
function longRun(out: string, ...extra: string[]): string[] {
  return [
    "train",
    "--distributed",
    "--resize",
    "32",
    "--batch-size",
    "16",
    "--limit-train",
    "1024",
    "--limit-test",
    "64",
    "--epochs",
    "100",
    "--threads",
    "1",
    "--no-download",
    "--out",
    out,
    ...data,
    ...extra,
  ];
}

interface Watched {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(args: string[]): Watched {
  // The spawn's timeout kills a hung job, so a hang fails the test instead of stalling it.
  const child = spawn("mpirun", args, { timeout: 600_000, env: { ...process.env, VGG_QUIET: "1" } });
  let text = "";
  child.stdout?.on("data", (d) => (text += d));
  child.stderr?.on("data", (d) => (text += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => text, exited };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 100));

/** Waits until epoch 1 is saved and rank 0 has logged a batch of epoch 2 (mid-epoch). */
async function untilMidEpoch2(run: Watched, out: string): Promise<void> {
  let done = false;
  run.exited.then(() => (done = true));
  const metrics = join(out, "metrics.jsonl");
  for (;;) {
    if (done) assert.fail(`the job ended before reaching epoch 2:\n${run.output()}`);
    if (/epoch 1\/100:/.test(run.output()) && existsSync(metrics)) {
      const points = readFileSync(metrics, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      if (points.some((p) => p.type === "batch" && p.epoch > 1 && p.epoch < 2)) return;
    }
    await tick();
  }
}

/** The checkpoint is whole: it parses, holds epoch `epoch`, and the model file loads. */
function assertCheckpointWhole(out: string, epoch: number): void {
  const c = readCheckpoint(join(out, "checkpoint.safetensors"));
  assert.equal(c.state.epoch, epoch);
  assert.ok(readSafetensors(join(out, "model.safetensors")).tensors.size > 0);
}

test("kill -9 of one rank mid-epoch ends the job, with the checkpoint intact and a clear message", {
  skip: mpiSkip,
  timeout: 900_000,
}, async () => {
  const out = join(work, "killed");
  const run = start(mpirunArgs(2, longRun(out)));
  await untilMidEpoch2(run, out);
  const victim = rankPid(run.child.pid!, 1);
  assert.ok(victim, "rank 1's process was not found among mpirun's children");
  process.kill(victim, "SIGKILL");
  const { code } = await run.exited;
  const text = run.output();
  assert.notEqual(code, 0, text);
  assert.match(text, /rank 1 .*exited on signal 9/s);
  const note = text.match(
    /vgg \(rank 0 of 2 on [^)]+\): stopped by mpirun \(SIGTERM\): another rank has ended or the job was aborted\. The checkpoint of epoch (\d+) in (\S+) is intact; continue with: mpirun -np N vgg train --distributed --resume \S+/,
  );
  assert.ok(note, `no message from rank 0:\n${text}`);
  assert.equal(note[2], out);
  assertCheckpointWhole(out, Number(note[1]));
});

test("a rank that stops answering ends the job after --mpi-timeout, saying so on the other rank", {
  skip: mpiSkip,
  timeout: 900_000,
}, async () => {
  const out = join(work, "stalled");
  const run = start(mpirunArgs(2, longRun(out, "--mpi-timeout", "10")));
  await untilMidEpoch2(run, out);
  const victim = rankPid(run.child.pid!, 1);
  assert.ok(victim, "rank 1's process was not found among mpirun's children");
  process.kill(victim, "SIGSTOP"); // alive but silent: MPI sees no error, only the timeout can tell
  const { code } = await run.exited;
  const text = run.output();
  assert.notEqual(code, 0, text);
  assert.match(
    text,
    /vgg: rank 0 of 2 on [^:]+: an all-reduce did not complete within 10 s: another rank has stopped, crashed or is stuck/,
  );
  assert.match(text, /ending the MPI job \(MPI_Abort\)/);
  assertCheckpointWhole(out, 1);
});
