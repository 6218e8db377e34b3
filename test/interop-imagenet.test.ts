// ImageNet-size use: the 1000 class names, `vgg predict` on a photo with a PyTorch-written torchvision-layout
// vgg16 (1/32 width, random weights) giving PyTorch's top-5, and fine-tuning from a checkpoint with another
// number of classes (`vgg train --init-weights`: trunk kept, head re-initialised).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { IMAGENET_CLASSES } from "../src/interop/imagenet-classes.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { parseArch, vgg } from "../src/models/vgg.js";
import { manualSeed } from "../src/rng.js";
import { loadInitWeights, saveModel } from "../src/train/checkpoint.js";
import { writeSyntheticFashionMnist } from "./helpers.js";

const FIXTURES = join(import.meta.dirname, "..", "..", "test", "fixtures", "interop");

function vggCli(...args: string[]) {
  const r = spawnSync(process.execPath, ["bin/vgg", ...args], {
    encoding: "utf8",
    env: { ...process.env, VGG_QUIET: "1" },
    timeout: 600_000,
  });
  if (r.error) throw new Error(`vgg ${args.join(" ")}: ${r.error.message}\n${r.stdout}${r.stderr}`);
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("the 1000 ImageNet class names, in torchvision's index order", () => {
  assert.equal(IMAGENET_CLASSES.length, 1000);
  const known: [number, string][] = [
    [0, "tench"],
    [1, "goldfish"],
    [151, "Chihuahua"],
    [207, "golden retriever"],
    [281, "tabby"],
    [340, "zebra"],
    [386, "African elephant"],
    [409, "analog clock"],
    [504, "coffee mug"],
    [948, "Granny Smith"],
    [954, "banana"],
    [999, "toilet tissue"],
  ];
  for (const [i, name] of known) assert.equal(IMAGENET_CLASSES[i], name, `class ${i}`);
  assert.ok(IMAGENET_CLASSES.every((n) => n.length > 0 && n.trim() === n));
  // Only the two known repeats: crane (bird, machine) and maillot.
  const repeats = IMAGENET_CLASSES.filter((n, i) => IMAGENET_CLASSES.indexOf(n) !== i);
  assert.deepEqual(repeats, ["crane", "maillot"]);
});

test("vgg predict --arch vgg16 --layout torchvision: PyTorch's top-5 with ImageNet names", {
  timeout: 600_000,
}, () => {
  const expected = JSON.parse(readFileSync(join(FIXTURES, "photo.top5.json"), "utf8")) as {
    top5: number[];
    probabilities: number[];
  };
  const weights = join(FIXTURES, "tv_vgg16_r32.safetensors");
  const flags = ["--arch", "vgg16", "--layout", "torchvision", "--ratio", "32", "--classifier-width", "32"];
  const photo = join(FIXTURES, "photo.png");
  const r = vggCli("predict", ...flags, "--weights", weights, photo, "--json");
  assert.equal(r.code, 0, r.err);
  const [result] = JSON.parse(r.out) as { top: { class: number; name: string; probability: number }[] }[];
  assert.deepEqual(
    result.top.map((t) => t.class),
    expected.top5,
  );
  result.top.forEach((t, i) => {
    assert.equal(t.name, IMAGENET_CLASSES[expected.top5[i]]);
    assert.ok(Math.abs(t.probability - expected.probabilities[i]) < 1e-5, `${t.probability} vs PyTorch's`);
  });
  const text = vggCli("predict", ...flags, "--weights", weights, photo);
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, new RegExp(`%  ${IMAGENET_CLASSES[expected.top5[0]]}\\n`));
});

test("loadInitWeights: a 10-class checkpoint initialises a 5-class model's trunk, not its head", () => {
  manualSeed(3);
  const source = vgg(parseArch("1x8,1x16"), { inputSize: 28, classifierWidth: 32 });
  const file = join(mkdtempSync(join(tmpdir(), "vgg-init-")), "init.safetensors");
  saveModel(file, source);
  const target = vgg(parseArch("1x8,1x16"), { inputSize: 28, classifierWidth: 32, numClasses: 5 });
  const { skipped } = loadInitWeights(file, target);
  assert.deepEqual(skipped, ["9.weight", "9.bias"]);
  const a = source.stateDict();
  for (const [k, t] of target.stateDict())
    if (!skipped.includes(k)) assert.deepEqual(t.data, a.get(k)?.data, k);
  assert.deepEqual(target.stateDict().get("9.weight")?.shape, [5, 32]);
});

test("vgg train --init-weights with another --num-classes keeps the trunk and re-initialises the head", {
  timeout: 600_000,
}, () => {
  manualSeed(5);
  const dir = mkdtempSync(join(tmpdir(), "vgg-finetune-"));
  // Synthetic Fashion-MNIST files: with lr 0 the pictures do not matter, only the format.
  const data = writeSyntheticFashionMnist(join(dir, "data"), { train: 256, test: 256 }).dir;
  const init = join(dir, "init.safetensors");
  const source = vgg(parseArch("1x8,1x16"), { inputSize: 28, classifierWidth: 32 });
  saveModel(init, source);
  // lr 0: every weight that came from the file must come out unchanged. 12 classes (labels 0..9 fit).
  const r = vggCli(
    ...["train", "--init-weights", init, "--num-classes", "12", "--arch", "1x8,1x16", "--ratio", "1"],
    ...["--resize", "28", "--classifier-width", "32", "--limit-train", "256", "--limit-test", "256"],
    ...["--epochs", "1", "--lr", "0", "--data-dir", data, "--no-download", "--out", join(dir, "run")],
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.out + r.err, /re-initialised \(shape differs\): 9\.weight, 9\.bias/);
  const { tensors, metadata } = readSafetensors(join(dir, "run", "model.safetensors"));
  assert.equal(JSON.parse(metadata["vgg-ts.config"]).numClasses, 12);
  const before = source.stateDict();
  for (const [k, t] of before) {
    if (k.startsWith("9.")) continue;
    assert.deepEqual(tensors.get(k)?.data, t.data, `${k} kept`);
  }
  assert.deepEqual(tensors.get("9.weight")?.shape, [12, 32]);
  assert.ok(
    tensors.get("9.weight")?.data.some((v) => v !== 0),
    "head re-initialised, not zero",
  );
});
