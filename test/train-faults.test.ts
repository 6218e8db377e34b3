// Faults during training: SIGKILL at random moments never leaves a torn checkpoint and a resumed run ends
// with the weights of an uninterrupted one; SIGINT saves and explains how to resume.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors } from "../src/io/safetensors.js";
import { Generator } from "../src/rng.js";
import { readCheckpoint } from "../src/train/checkpoint.js";
import { type Started, startVgg, waitUntil, writeSyntheticFashionMnist } from "./helpers.js";

// Small synthetic Fashion-MNIST files: the faults concern checkpoints, not the real pictures.
const root = mkdtempSync(join(tmpdir(), "vgg-faults-"));
after(() => rmSync(root, { recursive: true, force: true }));
const { dir: dataDir } = writeSyntheticFashionMnist(join(root, "data"), { train: 1024, test: 128 });
const env = { ...process.env, VGG_QUIET: "1" };
// Wide enough that writing a checkpoint takes a noticeable share of each epoch.
const recipe = [
  "--arch",
  "1x8,1x16",
  "--ratio",
  "1",
  "--resize",
  "28",
  "--classifier-width",
  "512",
  "--batch-size",
  "64",
];
const EPOCHS = 6;
const recipeData = ["--data-dir", dataDir, "--no-download", "--momentum", "0.9", "--epochs", String(EPOCHS)];
// Kills land at or before this epoch, so a whole epoch's batches, an evaluation and a checkpoint are still
// ahead of every kill however fast the machine is: each one lands inside the run.
const LAST_KILL_EPOCH = EPOCHS - 2;
// A hang becomes a failure with the run's output after this long; no assertion depends on speed.
const CHILD_TIMEOUT_MS = 120_000;

function run(args: string[]) {
  return spawnSync(process.execPath, ["bin/vgg", ...args], {
    encoding: "utf8",
    env,
    timeout: CHILD_TIMEOUT_MS,
  });
}

function start(args: string[]): Started {
  return startVgg(args, { env, timeoutMs: CHILD_TIMEOUT_MS });
}

/**
 * How far the run in `dir` has got, from the last complete line of its metrics.jsonl: the trainer appends
 * a record every few batches (epoch as a fraction: 2.5 is half-way through the third epoch) and rewrites the
 * file at each epoch's end. 0 before the first record.
 */
function progress(dir: string): number {
  let text: string;
  try {
    text = readFileSync(join(dir, "metrics.jsonl"), "utf8");
  } catch {
    return 0;
  }
  const lines = text.split("\n");
  lines.pop(); // the text after the last newline is empty or a line still being written
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      return (JSON.parse(lines[i]) as { epoch: number }).epoch;
    } catch {}
  }
  return 0;
}

function weights(dir: string) {
  return readSafetensors(join(dir, "model.safetensors")).tensors;
}

test("SIGKILL at random moments leaves a whole checkpoint, and resuming reaches the uninterrupted weights", {
  timeout: 600_000,
}, async (t) => {
  const reference = mkdtempSync(join(root, "ref-"));
  const ref = run(["train", ...recipe, ...recipeData, "--out", reference]);
  assert.equal(ref.status, 0, ref.stdout + ref.stderr);
  const expected = weights(reference);

  // Each run is killed once it reports reaching a random point of the recipe past where it starts (a
  // resumed run starts at its checkpoint; stale records of the killed run may lie beyond that, so the
  // target is past the file's last record). Targets up to a checkpoint's end land the kill during an
  // evaluation or a checkpoint write, the others during the batches.
  const dir = mkdtempSync(join(root, "kill-"));
  const g = new Generator(2024);
  const killedAt: number[] = [];
  for (;;) {
    const target = progress(dir) + g.uniform(0.05, 1.5);
    if (target > LAST_KILL_EPOCH) break;
    const resuming = existsSync(join(dir, "checkpoint.safetensors"));
    const p = start(
      resuming ? ["train", "--resume", dir] : ["train", ...recipe, ...recipeData, "--out", dir],
    );
    const reached = await waitUntil(p, () => progress(dir) >= target);
    if (reached) p.child.kill("SIGKILL");
    const end = await p.done;
    assert.ok(
      reached && end.signal === "SIGKILL" && !end.timedOut,
      `the run was to be killed at epoch ${target.toFixed(3)} but it ${end.timedOut ? "hung" : `exited with ${end.code ?? end.signal}`} (progress ${progress(dir)}):\n${p.output()}`,
    );
    killedAt.push(progress(dir));
    if (existsSync(join(dir, "checkpoint.safetensors"))) {
      // Always a complete file: the previous epoch's or the new one, never a torn write.
      const ckpt = readCheckpoint(join(dir, "checkpoint.safetensors"));
      assert.ok(ckpt.state.epoch >= 1 && ckpt.state.epoch <= LAST_KILL_EPOCH, `epoch ${ckpt.state.epoch}`);
      readSafetensors(join(dir, "model.safetensors"));
    }
  }
  assert.ok(killedAt.length >= 2, `at least two runs were killed (${killedAt.length})`);
  assert.ok(existsSync(join(dir, "checkpoint.safetensors")), "a killed run had saved a checkpoint");
  t.diagnostic(`SIGKILLs at epochs ${killedAt.map((e) => e.toFixed(3)).join(", ")}, then resumed to the end`);
  const last = run(["train", "--resume", dir]);
  assert.equal(last.status, 0, last.stdout + last.stderr);
  const actual = weights(dir);
  for (const [k, w] of expected)
    assert.deepEqual(actual.get(k)?.data, w.data, `${k} after ${killedAt.length} kills`);
});

test("SIGINT stops after the current batch, keeps the last epoch and says how to resume", {
  timeout: 300_000,
}, async () => {
  const dir = mkdtempSync(join(root, "int-"));
  const p = start(["train", ...recipe, ...recipeData, "--epochs", "50", "--out", dir]);
  // Interrupt once the first epoch is reported done.
  const reached = await waitUntil(p, () => /epoch 1\/50:/.test(p.output()), 20);
  assert.ok(reached, `the run ended before its first epoch:\n${p.output()}`);
  p.child.kill("SIGINT");
  const end = await p.done;
  assert.equal(end.code, 130, p.output());
  assert.match(
    p.output(),
    /Interrupted\. The last complete epoch is saved in .*; continue with: vgg train --resume /,
  );
  assert.ok(readCheckpoint(join(dir, "checkpoint.safetensors")).state.epoch >= 1);
});
