// Run-time ISA dispatch: the level reported matches the CPU's features, VGG_NATIVE_ISA forces every level
// the CPU has and refuses (naming the missing feature) those it lacks, and the native suites (comparison
// with the reference, fuzz, determinism, threads) pass under each level the CPU has, each in a child
// process since the level is fixed when the addon loads. Levels the CPU lacks are skipped with the reason.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadNativeAddon, type NativeInfo } from "../src/backend/native.js";

const here = dirname(fileURLToPath(import.meta.url));
const vgg = join(here, "..", "..", "bin", "vgg");
const levels = ["portable", "avx2", "avx512", "amx"] as const;
// What each level needs on top of the one below (native/isa.cc).
const needs: Record<(typeof levels)[number], string[]> = {
  portable: [],
  avx2: ["avx2", "fma"],
  avx512: ["avx512f", "avx512bw", "avx512vl", "avx512dq"],
  amx: ["amx-tile", "amx-bf16"],
};

const forced = process.env.VGG_NATIVE_ISA;
const loaded = loadNativeAddon();
if (loaded instanceof Error) throw new Error(`ISA tests need the addon: ${loaded.message}`);
const info: NativeInfo = loaded.info();

/** The features `level` needs that this CPU lacks (empty when it has the level). */
function missing(level: (typeof levels)[number]): string[] {
  const upTo = levels.slice(0, levels.indexOf(level) + 1);
  return upTo.flatMap((l) => needs[l]).filter((f) => !info.cpuFeatures.includes(f));
}

/** Runs `args` with VGG_NATIVE_ISA=level, outside the parent runner's protocol, with a time limit. */
function runAt(level: string, args: string[], extraEnv: Record<string, string> = {}, timeout = 300_000) {
  const { NODE_TEST_CONTEXT: _, VGG_NATIVE_ISA: __, ...env } = process.env;
  return spawnSync(process.execPath, args, {
    env: { ...env, VGG_NATIVE_ISA: level, ...extraEnv },
    encoding: "utf8",
    timeout,
  });
}

test("the level in use is the best the CPU has, and each level's features are present", () => {
  assert.equal(info.isa, forced || info.bestIsa);
  const best = levels.filter((l) => missing(l).length === 0).at(-1);
  assert.equal(info.bestIsa, best, `features ${info.cpuFeatures.join(" ")}`);
  assert.equal(info.cpuHasAvx2Fma, missing("avx2").length === 0);
  for (const family of ["gemm", "sparseGemm", "winogradTransforms", "directConv", "maxPool", "batchNorm"])
    assert.equal(typeof info.kernels[family], "string", `kernel named for ${family}`);
});

for (const level of levels) {
  const lacks = missing(level);
  if (lacks.length > 0) {
    test(`VGG_NATIVE_ISA=${level} is refused on this CPU, naming ${lacks.join(", ")}`, () => {
      const r = runAt(level, [
        "--input-type=module",
        "-e",
        `import { loadNativeAddon } from ${JSON.stringify(join(here, "..", "src", "backend", "native.js"))};
         try { loadNativeAddon(); console.log("loaded"); } catch (e) { console.log("refused: " + e.message); }`,
      ]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(
        r.stdout,
        new RegExp(`^refused: VGG_NATIVE_ISA=${level} needs ${lacks.join(", ")}, which this CPU lacks`),
      );
      // The command line reports it and exits 1 instead of falling back to the reference backend.
      const cli = runAt(level, [vgg, "info"], {}, 60_000);
      assert.equal(cli.status, 1, cli.stdout + cli.stderr);
      assert.match(cli.stderr, new RegExp(`vgg: VGG_NATIVE_ISA=${level} needs ${lacks[0]}`));
    });
    test(`the native suites at level ${level}`, (t) => {
      t.skip(`this CPU lacks ${lacks.join(", ")}`);
    });
    continue;
  }
  if (forced) continue; // a child run: the parent covers the other levels
  test(`the native suites pass at VGG_NATIVE_ISA=${level}`, (t) => {
    const child = runAt(level, [vgg, "info", "--json"], {}, 60_000);
    assert.equal(child.status, 0, child.stderr);
    const reported = JSON.parse(child.stdout) as { isa: string; kernels: Record<string, string> };
    assert.equal(reported.isa, level);
    t.diagnostic(
      `${level}: ${Object.entries(reported.kernels)
        .map(([f, k]) => `${f} ${k}`)
        .join("; ")}`,
    );
    if (level === info.bestIsa) return; // the default run of each suite covers the best level
    for (const suite of ["native", "native-determinism", "threads", "fuzz-native"]) {
      const r = runAt(level, ["--test-reporter=tap", join(here, `${suite}.test.js`)], {
        VGG_FUZZ_NATIVE_RUNS: "1000",
      });
      assert.equal(r.signal, null, `${suite} at ${level} died of ${r.signal}`);
      assert.equal(
        r.status,
        0,
        `${suite} at ${level} failed:\n${r.stdout.slice(-6000)}\n${r.stderr.slice(-2000)}`,
      );
      assert.match(r.stdout, /# fail 0/);
      const pass = /# pass (\d+)/.exec(r.stdout);
      assert.ok(pass && Number(pass[1]) > 0, `${suite} at ${level} ran no test`);
      t.diagnostic(`${suite} at ${level}: ${pass?.[1]} passed`);
    }
  });
}

// A child's GEMM outputs at one level, hashed: dense (every transpose, beta 0 and 1, edge rows and columns,
// k over several blocks) and sparse-A products (a ReLU-like A, 75% zeros), on 1 and 2 threads.
const gemmDigestChild = `
import { createHash } from "node:crypto";
import { loadNativeAddon } from ${JSON.stringify(join(here, "..", "src", "backend", "native.js"))};
const addon = loadNativeAddon();
let seed = 7;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296) * 2 - 1;
const shapes = [[1, 17, 5], [13, 35, 9], [25, 47, 400], [37, 96, 1000], [130, 70, 385], [8, 640, 700], [200, 600, 520]];
const hash = createHash("sha256");
for (const threads of [1, 2]) {
  addon.setNumThreads(threads);
  for (const [m, n, k] of shapes)
    for (const zeros of [0, 0.75])
      for (const ta of [false, true])
        for (const tb of [false, true])
          for (const beta of [0, 1]) {
            const a = Float32Array.from({ length: m * k }, () => (Math.abs(rand()) < zeros ? 0 : rand()));
            const b = Float32Array.from({ length: k * n }, rand);
            const c = Float32Array.from({ length: m * n }, rand);
            addon.gemm(c, a, b, m, n, k, ta, tb, beta);
            hash.update(new Uint8Array(c.buffer));
          }
}
console.log(JSON.stringify({ isa: addon.info().isa, digest: hash.digest("hex"), sparse: addon.info().sparseGemmCalls }));
`;

test("the dense and sparse GEMMs give the same bits at the avx2 and avx512 levels", (t) => {
  const have = (["avx2", "avx512"] as const).filter((l) => missing(l).length === 0);
  if (have.length < 2) {
    t.skip(`this CPU lacks ${missing("avx512").join(", ")}: one FMA level only`);
    return;
  }
  const digests = have.map((level) => {
    const r = runAt(level, ["--input-type=module", "-e", gemmDigestChild], {}, 120_000);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { isa: string; digest: string; sparse: number };
  });
  assert.deepEqual(
    digests.map((d) => d.isa),
    have,
  );
  assert.ok(digests[0].sparse > 0, "no product took the sparse path");
  assert.equal(digests[1].sparse, digests[0].sparse);
  assert.equal(digests[1].digest, digests[0].digest);
});

test("VGG_NATIVE_ISA must name a level", () => {
  const r = runAt("avx3", [vgg, "info"], {}, 60_000);
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    /Expected VGG_NATIVE_ISA to be "portable", "avx2", "avx512" or "amx" but received "avx3"; hint: unset it/,
  );
});

// A child's convolutions by each Winograd tile size, forced, at one level: forward (bias, with and without
// ReLU), the pooled epilogue (values and argmax), both gradients, on odd shapes that take every transform
// path (rows of more than 16 tiles and short last groups, padding 0/1/2, batch 1, channels not a multiple of
// 16, maps of 1-2 F(4x4) tiles across whose lanes take tiles of several images, tile chunks that end
// mid-row), each compared with the reference backend and hashed.
const convDigestChild = `
import { createHash } from "node:crypto";
import { loadNativeAddon, NativeBackend } from ${JSON.stringify(join(here, "..", "src", "backend", "native.js"))};
import { ReferenceBackend } from ${JSON.stringify(join(here, "..", "src", "backend", "reference.js"))};
import { maxPool2dGeometry } from ${JSON.stringify(join(here, "..", "src", "ops", "pool.js"))};
const addon = loadNativeAddon();
const native = new NativeBackend(addon);
const ref = new ReferenceBackend();
let seed = 11;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296) * 2 - 1;
const randn = (n) => Float32Array.from({ length: n }, rand);
const geo = (n, cIn, h, w, cOut, pad) =>
  ({ n, cIn, h, w, cOut, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: pad, padW: pad, outH: h + 2 * pad - 2, outW: w + 2 * pad - 2 });
const shapes = [
  geo(1, 5, 9, 150, 7, 1), geo(2, 3, 13, 67, 17, 0), geo(3, 17, 21, 40, 9, 2), geo(1, 19, 31, 31, 21, 1),
  geo(2, 6, 30, 37, 5, 1), geo(2, 33, 14, 14, 40, 1), geo(2, 20, 36, 70, 24, 1), geo(9, 6, 4, 4, 5, 1),
  geo(5, 7, 8, 6, 9, 1), geo(11, 3, 4, 5, 4, 0), geo(20, 5, 7, 7, 3, 1),
];
const hash = createHash("sha256");
let worst = 0, worstAt = "";
function compare(a, b, what) {
  let diff = 0, big = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    big = Math.max(big, Math.abs(b[i]));
  }
  const rel = diff / (1 + big);
  if (!(rel <= worst)) (worst = rel), (worstAt = what);
  hash.update(new Uint8Array(a.buffer));
}
for (const algorithm of ["winograd", "winograd4"]) {
  native.setConvAlgorithm(algorithm);
  for (const g of shapes) {
    const label = algorithm + " n" + g.n + " " + g.cIn + "->" + g.cOut + " " + g.h + "x" + g.w + " p" + g.padH;
    const x = randn(g.n * g.cIn * g.h * g.w), w = randn(g.cOut * g.cIn * 9), bias = randn(g.cOut);
    const yLen = g.n * g.cOut * g.outH * g.outW, dy = randn(yLen);
    const [y, yR] = [new Float32Array(yLen), new Float32Array(yLen)];
    for (const relu of [false, true]) {
      native.conv2dForward(y, x, w, bias, g, relu);
      ref.conv2dForward(yR, x, w, bias, g, relu);
      compare(y, yR, "forward relu=" + relu + " " + label);
    }
    const pg = maxPool2dGeometry([g.n, g.cOut, g.outH, g.outW], { kernelSize: 2 });
    const pooled = g.n * g.cOut * pg.outH * pg.outW;
    const [p, arg, pR, argR] = [new Float32Array(pooled), new Int32Array(pooled), new Float32Array(pooled), new Int32Array(pooled)];
    if (!native.conv2dReluMaxPool2dForward(p, arg, x, w, bias, g)) throw new Error("no pooled epilogue: " + label);
    ref.maxPool2dForward(pR, argR, yR, pg);
    compare(p, pR, "pooled " + label);
    hash.update(new Uint8Array(arg.buffer));
    const [dx, dxR] = [new Float32Array(x.length), new Float32Array(x.length)];
    native.conv2dBackwardInput(dx, dy, w, g);
    ref.conv2dBackwardInput(dxR, dy, w, g);
    compare(dx, dxR, "input gradient " + label);
    const [dw, dwR, db, dbR] = [new Float32Array(w.length), new Float32Array(w.length), new Float32Array(g.cOut), new Float32Array(g.cOut)];
    native.conv2dBackwardWeight(dw, db, dy, x, g);
    ref.conv2dBackwardWeight(dwR, dbR, dy, x, g);
    compare(dw, dwR, "weight gradient " + label);
    compare(db, dbR, "bias gradient " + label);
  }
}
console.log(JSON.stringify({ isa: addon.info().isa, kernel: addon.info().kernels.winogradTransforms, digest: hash.digest("hex"), worst, worstAt }));
`;

test("the Winograd transforms match the reference at every level, with the same bits at avx2, avx512 and amx", (t) => {
  const have = levels.filter((l) => missing(l).length === 0);
  const runs = have.map((level) => {
    const r = runAt(level, ["--input-type=module", "-e", convDigestChild], {}, 240_000);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      isa: string;
      kernel: string;
      digest: string;
      worst: number;
      worstAt: string;
    };
    assert.equal(out.isa, level);
    t.diagnostic(
      `${level} (${out.kernel}): worst difference from the reference ${out.worst.toExponential(2)} (${out.worstAt})`,
    );
    // The tolerance of the native suite's Winograd comparisons: |a - b| <= 2e-5 (1 + max |b|).
    assert.ok(out.worst <= 2e-5, `${level}: ${out.worst} at ${out.worstAt}`);
    return out;
  });
  const fma = runs.filter((r) => r.isa !== "portable");
  for (const r of fma.slice(1)) assert.equal(r.digest, fma[0].digest, `${r.isa} against ${fma[0].isa}`);
  if (!have.includes("avx512"))
    t.diagnostic(`this CPU lacks ${missing("avx512").join(", ")}: avx512 not compared`);
});

// A child's few-taps direct forward (a grayscale first layer) at one level: rows whose widths take every
// block size (128, 64, 32 and 16 pixels) and tails of 1-15 pixels, 1 and 4 input channels, 3x3 and 2x2
// kernels, padding 0 and 1, batch 1, with and without ReLU, compared with the reference and hashed; then the
// same with some NaN inputs, hashed only (the AVX2 kernel's ReLU turns a NaN sum into 0 in whole 8-pixel
// vectors and keeps it in the scalar tail, and the avx512 kernel keeps that rule).
const directDigestChild = `
import { createHash } from "node:crypto";
import { loadNativeAddon, NativeBackend } from ${JSON.stringify(join(here, "..", "src", "backend", "native.js"))};
import { ReferenceBackend } from ${JSON.stringify(join(here, "..", "src", "backend", "reference.js"))};
const addon = loadNativeAddon();
const native = new NativeBackend(addon);
const ref = new ReferenceBackend();
let seed = 5;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296) * 2 - 1;
const randn = (n) => Float32Array.from({ length: n }, rand);
const geo = (n, cIn, h, w, cOut, k, pad) =>
  ({ n, cIn, h, w, cOut, kh: k, kw: k, strideH: 1, strideW: 1, padH: pad, padW: pad, outH: h + 2 * pad - k + 1, outW: w + 2 * pad - k + 1 });
const shapes = [
  geo(1, 1, 5, 224, 5, 3, 1), geo(2, 1, 4, 247, 3, 3, 1), geo(1, 1, 6, 113, 7, 3, 0), geo(3, 1, 3, 23, 4, 3, 1),
  geo(1, 1, 9, 40, 3, 3, 1), geo(2, 1, 7, 17, 2, 3, 0), geo(1, 4, 5, 70, 3, 2, 1), geo(2, 1, 5, 9, 6, 3, 1),
];
const hash = createHash("sha256");
let worst = 0, worstAt = "", kernels = new Set();
for (const g of shapes) {
  kernels.add(native.convKernel(g, "forward"));
  const label = "n" + g.n + " " + g.cIn + "->" + g.cOut + " " + g.h + "x" + g.w + " k" + g.kh + " p" + g.padH;
  const x = randn(g.n * g.cIn * g.h * g.w), w = randn(g.cOut * g.cIn * g.kh * g.kw), bias = randn(g.cOut);
  const yLen = g.n * g.cOut * g.outH * g.outW;
  const [y, yR] = [new Float32Array(yLen), new Float32Array(yLen)];
  for (const relu of [false, true]) {
    native.conv2dForward(y, x, w, relu ? bias : null, g, relu);
    ref.conv2dForward(yR, x, w, relu ? bias : null, g, relu);
    let diff = 0, big = 0;
    for (let i = 0; i < yLen; i++) (diff = Math.max(diff, Math.abs(y[i] - yR[i]))), (big = Math.max(big, Math.abs(yR[i])));
    if (diff / (1 + big) > worst) (worst = diff / (1 + big)), (worstAt = label + " relu=" + relu);
    hash.update(new Uint8Array(y.buffer));
  }
  for (let i = 0; i < x.length; i += 37) x[i] = Number.NaN;
  native.conv2dForward(y, x, w, bias, g, true);
  hash.update(new Uint8Array(y.buffer));
}
console.log(JSON.stringify({ isa: addon.info().isa, kernel: addon.info().kernels.directConv, used: [...kernels], digest: hash.digest("hex"), worst, worstAt }));
`;

test("the few-taps direct conv matches the reference at every level, with the same bits at avx2, avx512 and amx", (t) => {
  const have = levels.filter((l) => missing(l).length === 0);
  const runs = have.map((level) => {
    const r = runAt(level, ["--input-type=module", "-e", directDigestChild], {}, 120_000);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      isa: string;
      kernel: string;
      used: string[];
      digest: string;
      worst: number;
      worstAt: string;
    };
    assert.equal(out.isa, level);
    assert.deepEqual(out.used, ["direct (few taps)"]);
    t.diagnostic(
      `${level} (${out.kernel}): worst difference from the reference ${out.worst.toExponential(2)} (${out.worstAt})`,
    );
    assert.ok(out.worst <= 2e-5, `${level}: ${out.worst} at ${out.worstAt}`);
    return out;
  });
  const fma = runs.filter((r) => r.isa !== "portable");
  for (const r of fma.slice(1)) assert.equal(r.digest, fma[0].digest, `${r.isa} against ${fma[0].isa}`);
  if (!have.includes("avx512"))
    t.diagnostic(`this CPU lacks ${missing("avx512").join(", ")}: avx512 not compared`);
});
