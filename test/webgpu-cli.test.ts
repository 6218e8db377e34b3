// The command line on the GPU: `vgg train`, `eval`, `predict` and `bench` with --backend webgpu (and
// VGG_BACKEND=webgpu) on SwiftShader, on small synthetic Fashion-MNIST files and a two-block VGG;
// the GPU run's model.safetensors evaluates the same on the CPU; without an adapter, an error naming
// what was looked for; and the commands that stay on the CPU say so.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { PNG } from "pngjs";
import { readSafetensors } from "../src/io/safetensors.js";
import { writeSyntheticFashionMnist } from "./helpers.js";
import { openGpu } from "./webgpu-setup.js";

const { ctx: probe, skip } = await openGpu();
probe?.destroy();
const bin = fileURLToPath(new URL("../../bin/vgg", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "vgg-webgpu-cli-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const dataDir = join(dir, "data");
writeSyntheticFashionMnist(dataDir, { train: 64, test: 64 });
const model = [
  "--arch",
  "1x8,1x16",
  "--ratio",
  "1",
  "--batch-norm",
  "--resize",
  "16",
  "--classifier-width",
  "32",
];
const data = ["--data-dir", dataDir, "--no-download"];

function vgg(env: Record<string, string>, ...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    encoding: "utf8",
    env: { ...process.env, VGG_QUIET: "1", ...env },
    timeout: 600_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("vgg train, eval, predict and bench --backend webgpu; the weights evaluate the same on the CPU", {
  skip,
  timeout: 1_200_000,
}, () => {
  const out = join(dir, "run");
  // VGG_BACKEND=webgpu chooses it as --backend webgpu does.
  const train = vgg(
    { VGG_BACKEND: "webgpu" },
    "train",
    ...model,
    ...data,
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--out",
    out,
  );
  assert.equal(train.code, 0, train.err);
  assert.match(train.out, /, on webgpu \(.+\); writing to/);
  const weights = join(out, "model.safetensors");
  const onGpu = vgg({}, "eval", "--backend", "webgpu", "--weights", weights, ...data, "--json");
  assert.equal(onGpu.code, 0, onGpu.err);
  const onCpu = vgg({}, "eval", "--backend", "reference", "--weights", weights, ...data, "--json");
  assert.equal(onCpu.code, 0, onCpu.err);
  const [g, c] = [JSON.parse(onGpu.out), JSON.parse(onCpu.out)];
  assert.equal(g.accuracy, c.accuracy);
  assert.ok(Math.abs(g.loss - c.loss) <= 1e-4 * Math.abs(c.loss), `loss ${g.loss} vs ${c.loss}`);

  const png = new PNG({ width: 20, height: 24 });
  for (let i = 0; i < png.data.length; i++) png.data[i] = (i * 37) % 256;
  const image = join(dir, "img.png");
  writeFileSync(image, PNG.sync.write(png));
  const predict = (backend: string) => {
    const r = vgg({}, "predict", "--backend", backend, "--weights", weights, image, "--json");
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out)[0].top as { name: string; probability: number }[];
  };
  const [pg, pc] = [predict("webgpu"), predict("reference")];
  assert.deepEqual(
    pg.map((t) => t.name),
    pc.map((t) => t.name),
  );
  pg.forEach((t, i) => {
    assert.ok(
      Math.abs(t.probability - pc[i].probability) <= 1e-5,
      `${t.name}: ${t.probability} vs ${pc[i].probability}`,
    );
  });

  for (const mode of ["train", "infer"]) {
    const bench = vgg(
      {},
      "bench",
      "--backend",
      "webgpu",
      "--mode",
      mode,
      ...model,
      "--batch-size",
      "4",
      "--iters",
      "1",
      "--json",
    );
    assert.equal(bench.code, 0, bench.err);
    const r = JSON.parse(bench.out);
    assert.equal(r.backend, "webgpu");
    assert.match(r.adapter, /^webgpu \(/);
    assert.ok(r.images_per_s > 0);
  }
});

test("a CPU run resumed on webgpu ends with the weights of the uninterrupted CPU run", {
  skip,
  timeout: 1_200_000,
}, () => {
  const recipe = [...model, ...data, "--batch-size", "16", "--lr", "0.05", "--momentum", "0.9"];
  const [whole, split] = [join(dir, "whole"), join(dir, "split")];
  const a = vgg({}, "train", "--backend", "reference", ...recipe, "--epochs", "2", "--out", whole);
  assert.equal(a.code, 0, a.err);
  const b = vgg({}, "train", "--backend", "reference", ...recipe, "--epochs", "1", "--out", split);
  assert.equal(b.code, 0, b.err);
  // The checkpoint's weights and momentum buffers go to the GPU; the second epoch runs there.
  const c = vgg({}, "train", "--backend", "webgpu", "--resume", split, "--epochs", "2");
  assert.equal(c.code, 0, c.err);
  assert.match(c.out, /on webgpu \(/);
  const [x, y] = [whole, split].map((d) => readSafetensors(join(d, "model.safetensors")).tensors);
  for (const [name, t] of x) {
    const u = y.get(name)!;
    let [d, m] = [0, 0];
    for (let i = 0; i < t.data.length; i++) {
      d = Math.max(d, Math.abs(t.data[i] - u.data[i]));
      m = Math.max(m, Math.abs(t.data[i]));
    }
    assert.ok(d <= 1e-4 * Math.max(m, 1e-3), `${name}: max difference ${d} (max ${m})`);
  }
});

test("vgg train --backend webgpu without an adapter fails naming what was looked for", {
  timeout: 120_000,
}, (t) => {
  const r = vgg(
    { VK_ICD_FILENAMES: "/nonexistent/icd.json" },
    "train",
    "--backend",
    "webgpu",
    ...model,
    ...data,
    "--out",
    join(dir, "none"),
  );
  if (/npm package "webgpu"/.test(r.err)) {
    t.skip("the optional webgpu package is not installed");
    return;
  }
  assert.equal(r.code, 1, r.err);
  assert.match(
    r.err,
    /Dawn found no WebGPU adapter: it looked for .*(VK_ICD_FILENAMES=\/nonexistent\/icd\.json|libvulkan1)/,
  );
});

test("the commands that stay on the CPU refuse --backend webgpu saying so", () => {
  const serve = vgg({}, "serve", "--backend", "webgpu", "--weights", join(dir, "missing.safetensors"));
  assert.equal(serve.code, 1);
  assert.match(
    serve.err,
    /vgg serve runs on the CPU backends \(native, reference\); --backend webgpu is for train, eval, predict and bench/,
  );
  const dash = vgg(
    {},
    "train",
    "--backend",
    "webgpu",
    "--dashboard",
    ...model,
    ...data,
    "--out",
    join(dir, "dash"),
  );
  assert.equal(dash.code, 1);
  assert.match(dash.err, /--dashboard runs on the CPU backends; it does not work with --backend webgpu yet/);
});
