// `npm run bench`: SGEMM GFLOP/s on large square matrices, then per-layer forward/backward time and GFLOP/s
// of the d2l model VGG-11/4 (1x224x224) through the native Backend methods, like a profiler, and, when
// Debian's python3-torch is importable, the same convolutions and SGEMMs in PyTorch (2 threads) in the same
// run with the ratio. The SGEMMs run in --rounds rounds (3), vgg-ts at each level of --isa (default: the
// level in use; e.g. --isa avx2,avx512, each in a child process with VGG_NATIVE_ISA) then PyTorch, so a
// noisy machine slows all alike and the per-round ratios hold. Options: --batch N (16) --iters N (3)
// --threads N --rounds N --isa LIST --no-torch.
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Conv2dGeometry, Pool2dGeometry } from "../src/backend/backend.js";
import { loadNativeAddon, NativeBackend } from "../src/backend/native.js";

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 1)
    throw new RangeError(`Expected --${name} to be an integer >= 1 but received ${process.argv[i + 1]}`);
  return v;
}

const batch = option("batch", 16);
const iters = option("iters", 3);
const rounds = option("rounds", 3);
const useTorch = !process.argv.includes("--no-torch");
const addon = loadNativeAddon();
if (addon instanceof Error) {
  console.error(`bench: ${addon.message}`);
  process.exit(1);
}
const be = new NativeBackend(addon);
if (process.argv.includes("--threads")) be.setNumThreads(option("threads", 2));
const isaIndex = process.argv.indexOf("--isa");
const isas = isaIndex >= 0 ? process.argv[isaIndex + 1].split(",") : [be.info().isa];

function randn(len: number): Float32Array {
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

/** Median seconds of `iters` runs after one warm-up run. */
function time(fn: () => void): number {
  fn();
  const times: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

const fmt = (v: number, width: number, digits = 1) => v.toFixed(digits).padStart(width);
const gflops = (flops: number, s: number) => flops / s / 1e9;

// ---- SGEMM ----
const gemmSizes = [512, 1024, 2048];
/** Median seconds of each square SGEMM at the level in use. */
function sgemmTimes(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of gemmSizes) {
    const a = randn(n * n);
    const b = randn(n * n);
    const c = new Float32Array(n * n);
    out[String(n)] = time(() => be.gemm(c, a, b, n, n, n, false, false, 0));
  }
  return out;
}
if (process.argv.includes("--sgemm-child")) {
  console.log(JSON.stringify(sgemmTimes()));
  process.exit(0);
}
const info = be.info();
console.log(
  `vgg-ts native bench on ${cpus()[0]?.model ?? "an unknown CPU"} (features: ${info.cpuFeatures.join(" ")}): ` +
    `isa ${info.isa} (best here: ${info.bestIsa}), kernel ${info.gemmKernel}, ${be.numThreads()} threads, batch ${batch}, ${iters} iters (median)`,
);
console.log(
  `kernels at ${info.isa}: ${Object.entries(info.kernels)
    .map(([f, k]) => `${f} ${k}`)
    .join("; ")}`,
);
const torchScript = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "bench", "torch_layers.py");
function runTorch(spec: object): { result: TorchResult | null; error: string } {
  const r = spawnSync("/usr/bin/python3", [torchScript], {
    input: JSON.stringify(spec),
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  if (r.status === 0) return { result: JSON.parse(r.stdout) as TorchResult, error: "" };
  return { result: null, error: (r.stderr || r.error?.message || "").trim().split("\n").pop() ?? "" };
}
// times[level][size] and torchTimes[size]: one entry per round.
const gemmRounds = new Map<string, Record<string, number>[]>(isas.map((l) => [l, []]));
const torchGemmRounds: Record<string, number>[] = [];
let torchGemmError = "";
for (let r = 0; r < rounds; r++) {
  for (const level of isas) {
    if (level === info.isa) {
      gemmRounds.get(level)?.push(sgemmTimes());
      continue;
    }
    const child = spawnSync(process.execPath, [...process.argv.slice(1), "--sgemm-child"], {
      encoding: "utf8",
      env: { ...process.env, VGG_NATIVE_ISA: level },
    });
    if (child.status !== 0) throw new Error(`the SGEMM run at ${level} failed: ${child.stderr.trim()}`);
    gemmRounds.get(level)?.push(JSON.parse(child.stdout) as Record<string, number>);
  }
  if (useTorch && !torchGemmError) {
    const { result, error } = runTorch({ iters, gemm: gemmSizes, layers: [] });
    if (result) torchGemmRounds.push(result.gemm);
    else torchGemmError = error;
  }
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

// ---- VGG-11/4 layers (d2l: conv_arch ((1,16),(1,32),(2,64),(2,128),(2,128)), 1x224x224) ----
const convArch: [number, number][] = [
  [1, 16],
  [1, 32],
  [2, 64],
  [2, 128],
  [2, 128],
];
interface ConvLayer {
  name: string;
  g: Conv2dGeometry;
}
const convs: ConvLayer[] = [];
const pools: { name: string; g: Pool2dGeometry }[] = [];
let [channels, size] = [1, 224];
convArch.forEach(([numConvs, outChannels], block) => {
  for (let i = 0; i < numConvs; i++) {
    convs.push({
      name: `conv${block + 1}.${i + 1}`,
      g: {
        n: batch,
        cIn: channels,
        h: size,
        w: size,
        cOut: outChannels,
        kh: 3,
        kw: 3,
        strideH: 1,
        strideW: 1,
        padH: 1,
        padW: 1,
        outH: size,
        outW: size,
      },
    });
    channels = outChannels;
  }
  const half = Math.floor(size / 2);
  pools.push({
    name: `pool${block + 1}`,
    g: {
      n: batch,
      c: channels,
      h: size,
      w: size,
      kh: 2,
      kw: 2,
      strideH: 2,
      strideW: 2,
      padH: 0,
      padW: 0,
      outH: half,
      outW: half,
    },
  });
  size = half;
});
const linears: [number, number][] = [
  [channels * size * size, 4096],
  [4096, 4096],
  [4096, 10],
];

const short = (kernel: string) =>
  kernel.startsWith("winograd F(4x4")
    ? "wino4"
    : kernel.startsWith("winograd")
      ? "wino2"
      : kernel.startsWith("im2col+gemm")
        ? "gemm"
        : kernel.startsWith("direct")
          ? "direct"
          : kernel;

interface Row {
  name: string;
  shape: string;
  fwd: number;
  bwdIn: number;
  bwdW: number;
  flops: number; // of one forward pass; each backward pass has the same count
  kernel: string; // forward / input-gradient kernel chosen (measured on first use)
}
const rows: Row[] = [];
for (const { name, g } of convs) {
  const x = randn(g.n * g.cIn * g.h * g.w);
  const w = randn(g.cOut * g.cIn * g.kh * g.kw);
  const bias = randn(g.cOut);
  const y = new Float32Array(g.n * g.cOut * g.outH * g.outW);
  const dy = randn(y.length);
  const dx = new Float32Array(x.length);
  const dw = new Float32Array(w.length);
  const db = new Float32Array(g.cOut);
  rows.push({
    name,
    shape: `${g.cIn}->${g.cOut} @${g.h}`,
    fwd: time(() => be.conv2dForward(y, x, w, bias, g, true)),
    // A block's second conv reads the first one's ReLU output, so that ReLU's backward is fused in here.
    bwdIn: time(() => be.conv2dBackwardInput(dx, dy, w, g, name.endsWith(".1") ? null : x)),
    bwdW: time(() => be.conv2dBackwardWeight(dw, db, dy, x, g)),
    flops: 2 * g.n * g.cOut * g.outH * g.outW * g.cIn * g.kh * g.kw,
    kernel: `${short(be.convKernel(g, "forward"))}/${short(be.convKernel(g, "backward"))}`,
  });
}
const other: { name: string; s: number }[] = [];
for (const { name, g } of pools) {
  const x = randn(g.n * g.c * g.h * g.w);
  const y = new Float32Array(g.n * g.c * g.outH * g.outW);
  const argmax = new Int32Array(y.length);
  const dx = new Float32Array(x.length);
  other.push({ name: `${name} fwd`, s: time(() => be.maxPool2dForward(y, argmax, x, g)) });
  // The backward applies the ReLU mask of the conv before the pool (fused, as in a training step).
  other.push({ name: `${name} bwd`, s: time(() => be.maxPool2dBackward(dx, y, argmax, g, y)) });
}
linears.forEach(([inF, outF], i) => {
  const x = randn(batch * inF);
  const w = randn(outF * inF);
  const y = new Float32Array(batch * outF);
  const dy = randn(y.length);
  const dx = new Float32Array(x.length);
  const dw = new Float32Array(w.length);
  rows.push({
    name: `fc${i + 1}`,
    shape: `${inF}->${outF}`,
    fwd: time(() => be.gemm(y, x, w, batch, outF, inF, false, true, 0)),
    bwdIn: time(() => be.gemm(dx, dy, w, batch, inF, outF, false, false, 0)),
    bwdW: time(() => be.gemm(dw, dy, x, outF, inF, batch, true, false, 0)),
    flops: 2 * batch * inF * outF,
    kernel: "gemm",
  });
});

// ---- PyTorch, same run ----
interface TorchResult {
  torch: string;
  threads: number;
  gemm: Record<string, number>;
  layers: { name: string; forward: number; backwardInput: number; backwardWeight: number }[];
}
let torch: TorchResult | null = null;
if (useTorch) {
  const spec = {
    iters,
    gemm: gemmSizes,
    layers: convs.map(({ name, g }) => ({
      name,
      n: g.n,
      cIn: g.cIn,
      h: g.h,
      w: g.w,
      cOut: g.cOut,
      k: g.kh,
      stride: 1,
      pad: 1,
    })),
  };
  const { result, error } = runTorch(spec);
  torch = result;
  if (!result) console.log(`(PyTorch comparison skipped: ${error})`);
}

const hasTorch = torchGemmRounds.length === rounds;
console.log(
  `\nSGEMM (square, row-major, C = A B), ${rounds} interleaved rounds: medians of GFLOP/s, ` +
    `and the median of the per-round ratios${hasTorch ? ` vs PyTorch ${torch?.torch ?? ""} torch.mm (its BLAS, ${torch?.threads ?? 2} threads)` : ""}` +
    (torchGemmError ? ` (PyTorch skipped: ${torchGemmError})` : ""),
);
console.log(
  `${"size".padStart(6)}${isas.map((l) => `${`${l} GF/s`.padStart(14)}${hasTorch ? " vs torch".padStart(10) : ""}`).join("")}` +
    `${hasTorch ? "  torch GF/s".padStart(12) : ""}${isas.length > 1 ? `  ${isas.at(-1)}/${isas[0]}` : ""}`,
);
for (const n of gemmSizes) {
  const flops = 2 * n ** 3;
  const key = String(n);
  const perLevel = isas.map((l) => (gemmRounds.get(l) ?? []).map((t) => t[key]));
  let line = String(n).padStart(6);
  for (const times of perLevel) {
    line += fmt(gflops(flops, median(times)), 14);
    if (hasTorch) line += `${fmt(median(times.map((t, r) => torchGemmRounds[r][key] / t)), 9, 2)}x`;
  }
  if (hasTorch) line += fmt(gflops(flops, median(torchGemmRounds.map((t) => t[key]))), 12);
  if (isas.length > 1)
    line += `  ${fmt(median(perLevel[0].map((t, r) => t / (perLevel.at(-1) ?? perLevel[0])[r])), 6, 2)}x`;
  console.log(line);
}

console.log(
  `\nVGG-11/4 per layer, batch ${batch} (ms; GFLOP/s counts the direct algorithm's FLOPs; forward has bias+ReLU ` +
    "fused; kernel = forward/input-gradient choice)",
);
const head = `${"layer".padEnd(9)} ${"shape".padEnd(13)} ${"kernel".padEnd(11)} ${"fwd ms".padStart(8)} ${"GF/s".padStart(6)} ${"bwdIn ms".padStart(9)} ${"GF/s".padStart(6)} ${"bwdW ms".padStart(8)} ${"GF/s".padStart(6)}`;
console.log(torch ? `${head}   torch fwd/bwdIn/bwdW ms      speed-up` : head);
let total = 0;
let totalFlops = 0;
let torchTotal = 0;
let nativeConvTotal = 0;
for (const r of rows) {
  const first = r.name === "conv1.1"; // the input image needs no gradient
  const step = r.fwd + r.bwdW + (first ? 0 : r.bwdIn);
  total += step;
  totalFlops += r.flops * (first ? 2 : 3);
  let line = `${r.name.padEnd(9)} ${r.shape.padEnd(13)} ${r.kernel.padEnd(11)} ${fmt(r.fwd * 1e3, 8, 2)} ${fmt(gflops(r.flops, r.fwd), 6)} ${fmt(r.bwdIn * 1e3, 9, 2)} ${fmt(gflops(r.flops, r.bwdIn), 6)} ${fmt(r.bwdW * 1e3, 8, 2)} ${fmt(gflops(r.flops, r.bwdW), 6)}`;
  const t = torch?.layers.find((l) => l.name === r.name);
  if (t) {
    const tStep = t.forward + t.backwardWeight + (first ? 0 : t.backwardInput);
    torchTotal += tStep;
    nativeConvTotal += step;
    line += `   ${fmt(t.forward * 1e3, 7, 2)}/${fmt(t.backwardInput * 1e3, 7, 2)}/${fmt(t.backwardWeight * 1e3, 7, 2)}   ${fmt(tStep / step, 5, 2)}x`;
  }
  console.log(line);
}
for (const o of other) total += o.s;
const otherMs = other.map((o) => `${o.name} ${(o.s * 1e3).toFixed(2)}`).join(", ");
console.log(`\npool (backward with the ReLU mask fused): ${otherMs} ms`);
console.log(
  `sum of the step's kernels: ${(total * 1e3).toFixed(1)} ms for ${batch} images = ${fmt(batch / total, 1)} images/s, ` +
    `${fmt(gflops(totalFlops, total), 1)} GFLOP/s over the conv+fc FLOPs`,
);
if (torch && nativeConvTotal > 0)
  console.log(
    `convolutions, training step (fwd + both grads): native ${(nativeConvTotal * 1e3).toFixed(1)} ms, ` +
      `PyTorch ${torch.torch} ${(torchTotal * 1e3).toFixed(1)} ms (${torch.threads} threads): ${(torchTotal / nativeConvTotal).toFixed(2)}x`,
  );
