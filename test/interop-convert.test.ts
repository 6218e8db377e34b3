// d2l <-> torchvision layout conversion: key mapping against torchvision's real vgg11 indices, equal
// logits after converting, a lossless round trip through `vgg convert`, and the errors.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { noGrad } from "../src/autograd.js";
import { convertKey, convertLayout } from "../src/interop/convert.js";
import { readSafetensors } from "../src/io/safetensors.js";
import { parseArch, vgg } from "../src/models/vgg.js";
import { randomTensor } from "./helpers.js";

const FIXTURES = join(import.meta.dirname, "..", "..", "test", "fixtures", "interop");

test("convertKey follows torchvision's vgg11 and vgg11_bn feature indices", () => {
  const plain = vgg(parseArch("vgg11"), { widthRatio: 32, inputSize: 224, classifierWidth: 8 }).config;
  assert.equal(convertKey("0.0.weight", plain, "d2l", "torchvision"), "features.0.weight");
  assert.equal(convertKey("1.0.bias", plain, "d2l", "torchvision"), "features.3.bias");
  assert.equal(convertKey("2.2.weight", plain, "d2l", "torchvision"), "features.8.weight");
  assert.equal(convertKey("4.2.weight", plain, "d2l", "torchvision"), "features.18.weight");
  assert.equal(convertKey("6.weight", plain, "d2l", "torchvision"), "classifier.0.weight");
  assert.equal(convertKey("12.bias", plain, "d2l", "torchvision"), "classifier.6.bias");
  assert.equal(convertKey("features.18.weight", plain, "torchvision", "d2l"), "4.2.weight");
  const bn = vgg(parseArch("vgg11"), { widthRatio: 32, batchNorm: true, classifierWidth: 8 }).config;
  // vgg11_bn: features.22 is the 7th conv (block 4's first), .23 its BatchNorm, .25 the 8th conv.
  assert.equal(convertKey("4.1.running_var", bn, "d2l", "torchvision"), "features.23.running_var");
  assert.equal(convertKey("features.25.weight", bn, "torchvision", "d2l"), "4.3.weight");
  assert.throws(
    () => convertKey("5.weight", plain, "d2l", "torchvision"),
    /Expected a d2l-layout VGG state dict key/,
  );
  assert.throws(() => convertKey("avgpool.x", plain, "torchvision", "d2l"), /received "avgpool.x"/);
});

for (const batchNorm of [false, true])
  test(`d2l -> torchvision -> d2l keeps the logits${batchNorm ? " (batch norm)" : ""}`, () => {
    const d2l = vgg(parseArch("1x4,1x8,1x8,1x8,1x8"), { inputSize: 224, batchNorm, classifierWidth: 16 });
    d2l.train();
    noGrad(() => d2l.forward(randomTensor([2, 1, 224, 224], 3, -1, 1, false))); // running stats move
    d2l.eval();
    const tv = convertLayout(d2l, "torchvision").eval();
    assert.equal(tv.config.layout, "torchvision");
    const x = randomTensor([2, 1, 224, 224], 4, -1, 1, false);
    const a = noGrad(() => d2l.forward(x)).data;
    const b = noGrad(() => tv.forward(x)).data;
    assert.deepEqual(b, a); // the same ops on the same numbers: 7x7 adaptive pooling of 7x7 is exact
    const back = convertLayout(tv, "d2l");
    assert.deepEqual([...back.stateDict().keys()], [...d2l.stateDict().keys()]);
    for (const [k, t] of back.stateDict()) assert.deepEqual(t.data, d2l.stateDict().get(k)?.data, k);
  });

test("a d2l model whose trunk output is not 7x7 does not convert", () => {
  const d2l = vgg(parseArch("1x4,1x8"), { inputSize: 32, classifierWidth: 16 });
  assert.throws(() => convertLayout(d2l, "torchvision"), {
    message:
      "Expected a d2l model whose trunk output is 7x7 (its classifier taking C*7*7 features, as torchvision's) but received 8x8 for inputSize 32; hint: only models built with --input-size 28 convert to the torchvision layout",
  });
});

function vggCli(...args: string[]) {
  // A hang guard: a hang fails with its output.
  const r = spawnSync(process.execPath, ["bin/vgg", ...args], { encoding: "utf8", timeout: 300_000 });
  if (r.error) throw new Error(`vgg ${args.join(" ")}: ${r.error.message}\n${r.stdout}${r.stderr}`);
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("vgg convert: torchvision file -> d2l -> torchvision is lossless; wrong --from and sizes are errors", () => {
  const dir = mkdtempSync(join(tmpdir(), "vgg-convert-"));
  const src = join(FIXTURES, "vggts_tv_vgg11_bn_r32.safetensors");
  const r1 = vggCli(
    "convert",
    "--from",
    "torchvision",
    "--to",
    "d2l",
    src,
    "-o",
    join(dir, "d2l.safetensors"),
  );
  assert.equal(r1.code, 0, r1.err);
  assert.match(r1.out, /torchvision -> d2l, 62 tensors \(d2l model for 224x224 inputs\)/);
  const r2 = vggCli(
    "convert",
    "--from",
    "d2l",
    "--to",
    "torchvision",
    join(dir, "d2l.safetensors"),
    "-o",
    join(dir, "tv.safetensors"),
  );
  assert.equal(r2.code, 0, r2.err);
  const a = readSafetensors(src).tensors;
  const b = readSafetensors(join(dir, "tv.safetensors")).tensors;
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  for (const [k, t] of a) assert.deepEqual(b.get(k)?.data, t.data, k);

  const wrong = vggCli(
    "convert",
    "--from",
    "d2l",
    "--to",
    "torchvision",
    src,
    "-o",
    join(dir, "x.safetensors"),
  );
  assert.equal(wrong.code, 1);
  assert.match(
    wrong.err,
    /to hold a d2l-layout model but its metadata says torchvision; hint: use --from torchvision/,
  );
  // PyTorch's d2l file (no metadata) described by flags: built for 64x64 inputs, so its trunk is 2x2.
  const flags = ["--arch", "vgg11", "--ratio", "32", "--input-size", "64", "--classifier-width", "32"];
  const small = vggCli(
    "convert",
    "--from",
    "d2l",
    "--to",
    "torchvision",
    join(FIXTURES, "d2l_vgg11_r32.safetensors"),
    ...flags,
    "-o",
    join(dir, "y.safetensors"),
  );
  assert.equal(small.code, 1);
  assert.match(small.err, /received 2x2 for inputSize 64; hint: only models built with --input-size 224/);
});
