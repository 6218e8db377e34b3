// `vgg summary`, run as a user runs it (the bin script in a child process).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

function vgg(...args: string[]) {
  const r = spawnSync(process.execPath, ["bin/vgg", ...args], {
    encoding: "utf8",
    env: { ...process.env, VGG_QUIET: "1" },
    timeout: 120_000, // a hang guard: a hang fails with its output
  });
  if (r.error) throw new Error(`vgg ${args.join(" ")}: ${r.error.message}\n${r.stdout}${r.stderr}`);
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("vgg summary prints the d2l shape walk, the table and the totals", () => {
  const r = vgg("summary");
  assert.equal(r.code, 0, r.err);
  const lines = r.out.split("\n");
  assert.deepEqual(lines.slice(0, 6), [
    "Sequential output shape:\t[1, 64, 112, 112]",
    "Sequential output shape:\t[1, 128, 56, 56]",
    "Sequential output shape:\t[1, 256, 28, 28]",
    "Sequential output shape:\t[1, 512, 14, 14]",
    "Sequential output shape:\t[1, 512, 7, 7]",
    "Flatten output shape:\t[1, 25088]",
  ]);
  assert.equal(lines[12], "Linear output shape:\t[1, 10]");
  assert.match(r.out, /0\.0 +Conv2d\(1, 64, kernel_size=3, padding=1\) +\[1, 64, 224, 224\] +640 +28\.90 M/);
  assert.match(r.out, /Total params: 128,806,154/);
});

test("vgg summary --json for torchvision's vgg16 has its parameter count and MACs", () => {
  const r = vgg("summary", "--arch", "vgg16", "--layout", "torchvision", "--json");
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  assert.equal(s.totalParams, 138_357_544);
  assert.equal(s.totalMacs, 15_470_264_320);
  assert.deepEqual(s.walk.at(-1), { layer: "Sequential", outputShape: [1, 1000] });
  assert.equal(s.rows[0].name, "features.0");
});

test("vgg summary with a custom architecture, ratio and batch norm", () => {
  const r = vgg(
    "summary",
    "--arch",
    "1x8,2x16",
    "--ratio",
    "2",
    "--input-size",
    "32",
    "--batch-norm",
    "--json",
  );
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  assert.deepEqual(s.config.convArch, [
    [1, 4],
    [2, 8],
  ]);
  assert.deepEqual(s.walk[1].outputShape, [1, 8, 8, 8]);
  assert.ok(s.rows.some((row: { layer: string }) => row.layer.startsWith("BatchNorm2d(8")));
});

test("bad flags fail with a clear message and a non-zero exit", () => {
  const r = vgg("summary", "--ratio", "0");
  assert.notEqual(r.code, 0);
  assert.match(r.err, /Expected --ratio to be a positive integer but received "0"/);
  const s = vgg("summary", "--arch", "vgg12");
  assert.equal(s.code, 1);
  assert.match(s.err, /Expected an architecture name \(vgg11, vgg13, vgg16, vgg19\)/);
});
