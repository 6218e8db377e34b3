// Faults during training: SIGKILL at random moments never leaves a torn checkpoint and a resumed run ends
// with the weights of an uninterrupted one; SIGINT saves and explains how to resume.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { locateFashionMnist } from "../src/data/fashion-mnist.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { Generator } from "../src/rng.js";
import { readCheckpoint } from "../src/train/checkpoint.js";

const haveData = locateFashionMnist("train") !== undefined && locateFashionMnist("test") !== undefined;
const skip =
  !haveData && !process.env.CI
    ? "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
    : false;
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
const recipeData = ["--limit-train", "1024", "--limit-test", "128", "--momentum", "0.9", "--epochs", "4"];

function run(args: string[]) {
  return spawnSync(process.execPath, ["bin/vgg", ...args], { encoding: "utf8", env, timeout: 300_000 });
}

function start(args: string[]): { child: ChildProcess; output: () => string; done: Promise<number | null> } {
  const child = spawn(process.execPath, ["bin/vgg", ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (d) => (out += d));
  child.stderr?.on("data", (d) => (out += d));
  const done = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, output: () => out, done };
}

function weights(dir: string) {
  return readSafetensors(join(dir, "model.safetensors")).tensors;
}

test("SIGKILL at random moments leaves a whole checkpoint, and resuming reaches the uninterrupted weights", {
  skip,
}, async (t) => {
  const reference = mkdtempSync(join(tmpdir(), "vgg-ref-"));
  assert.equal(run(["train", ...recipe, ...recipeData, "--out", reference]).status, 0);
  const expected = weights(reference);

  const dir = mkdtempSync(join(tmpdir(), "vgg-kill-"));
  const g = new Generator(2024);
  let kills = 0;
  let started = false;
  for (let attempt = 0; attempt < 12; attempt++) {
    const args = started ? ["train", "--resume", dir] : ["train", ...recipe, ...recipeData, "--out", dir];
    const p = start(args);
    const delay = 300 + g.int(2500);
    const timer = setTimeout(() => p.child.kill("SIGKILL"), delay);
    const code = await p.done;
    clearTimeout(timer);
    if (existsSync(join(dir, "checkpoint.safetensors"))) {
      // Always a complete file: the previous epoch's or the new one, never a torn write.
      const ckpt = readCheckpoint(join(dir, "checkpoint.safetensors"));
      assert.ok(ckpt.state.epoch >= 1 && ckpt.state.epoch <= 4);
      readSafetensors(join(dir, "model.safetensors"));
      started = true;
    }
    if (code === null) kills++;
    else {
      assert.equal(code, 0, p.output());
      break;
    }
  }
  // Finish whatever is left and compare.
  // (On a slow machine every kill may come before the first checkpoint: then start afresh.)
  const last = run(started ? ["train", "--resume", dir] : ["train", ...recipe, ...recipeData, "--out", dir]);
  assert.equal(last.status, 0, last.stdout + last.stderr);
  assert.ok(kills >= 1, "at least one run was killed");
  t.diagnostic(`${kills} SIGKILLs, then resumed to the end`);
  const actual = weights(dir);
  for (const [k, t] of expected) assert.deepEqual(actual.get(k)?.data, t.data, `${k} after ${kills} kills`);
});

test("SIGINT stops after the current batch, keeps the last epoch and says how to resume", {
  skip,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "vgg-int-"));
  const p = start(["train", ...recipe, ...recipeData, "--epochs", "50", "--out", dir]);
  // Wait for the first epoch line, then interrupt.
  while (!/epoch 1\/50:/.test(p.output())) {
    const exited = await Promise.race([
      p.done.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 100)),
    ]);
    assert.equal(exited, false, p.output());
  }
  p.child.kill("SIGINT");
  const code = await p.done;
  assert.equal(code, 130, p.output());
  assert.match(
    p.output(),
    /Interrupted\. The last complete epoch is saved in .*; continue with: vgg train --resume /,
  );
  assert.ok(readCheckpoint(join(dir, "checkpoint.safetensors")).state.epoch >= 1);
});
