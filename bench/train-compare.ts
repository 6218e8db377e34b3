// Whole-step throughput of the d2l model, vgg-ts (`vgg bench --json`) against PyTorch (default and
// channels_last memory format) in the same run, when Debian's python3-torch is importable; with --isa, vgg-ts
// at each listed ISA level (VGG_NATIVE_ISA) in turn, interleaved per configuration so noise hits all alike.
// Usage: node dist/bench/train-compare.js [--iters N] [--threads N] [--configs train:224:128,infer:224:128,...]
//        [--isa avx2,avx512] [--precision fp32|bf16] (bf16: vgg-ts --precision bf16, PyTorch under CPU autocast)
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { nativeInfo } from "../src/backend/native.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const iters = arg("--iters", "3");
const threads = arg("--threads", "2");
const precision = arg("--precision", "fp32");
const configs = arg("--configs", "train:224:128,infer:224:128,infer:224:1,train:32:128,infer:32:128")
  .split(",")
  .map((c) => c.split(":"))
  .map(([mode, resize, batch]) => ({ mode, resize, batch }));
const native = nativeInfo();
const isas = arg("--isa", native.isa).split(",");

function ours(mode: string, resize: string, batch: string, isa: string): number {
  const r = spawnSync(
    process.execPath,
    [
      "bin/vgg",
      "bench",
      "--mode",
      mode,
      "--resize",
      resize,
      "--batch-size",
      batch,
      "--iters",
      iters,
      "--threads",
      threads,
      "--precision",
      precision,
      "--json",
    ],
    { encoding: "utf8", env: { ...process.env, VGG_QUIET: "1", VGG_NATIVE_ISA: isa } },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout).images_per_s;
}

function torch(mode: string, resize: string, batch: string, channelsLast: boolean): number | null {
  const r = spawnSync(
    "/usr/bin/python3",
    ["bench/torch_step.py", mode, resize, batch, iters, threads, "4", channelsLast ? "1" : "0", precision],
    {
      encoding: "utf8",
    },
  );
  return r.status === 0 ? JSON.parse(r.stdout).images_per_s : null;
}

console.log(
  `d2l VGG-11/4, ${threads} threads, ${cpus()[0]?.model ?? "cpu"} (features: ${native.cpuFeatures.join(" ")}); ` +
    `vgg-ts isa ${isas.join(", ")} (best here: ${native.bestIsa}), ${precision}; images/s (median of ${iters} steps)`,
);
const f = (v: number | null) => (v === null ? "-" : v.toFixed(1)).padStart(9);
console.log(
  `mode   size batch${isas.map((i) => `vgg-${i}`.padStart(12)).join("")}    torch torch-cl   ratio (each vs best torch)`,
);
for (const c of configs) {
  const a = isas.map((isa) => ours(c.mode, c.resize, c.batch, isa));
  const t = torch(c.mode, c.resize, c.batch, false);
  const tcl = torch(c.mode, c.resize, c.batch, true);
  const best = Math.max(t ?? 0, tcl ?? 0);
  const ratios = best ? a.map((v) => `${(v / best).toFixed(2)}x`).join(" ") : "-";
  console.log(
    `${c.mode.padEnd(6)} ${c.resize.padStart(4)} ${c.batch.padStart(5)}${a.map((v) => `   ${f(v)}`).join("")}${f(t)}${f(tcl)}   ${ratios}`,
  );
}
