// `vgg info`: the backend in use, why (if it fell back), the CPU features, the ISA level and each kernel chosen, threads, and the conv
// kernel chosen per layer of a model.
import { cpus } from "node:os";
import { Command } from "commander";
import {
  type BackendName,
  backend,
  backendFallbackReason,
  setBackend,
  setNumThreads,
} from "../backend/index.js";
import { loadNativeAddon, nativeInfo } from "../backend/native.js";
import { describeWebGpu } from "../backend/webgpu/device.js";
import { printDistributedInfo } from "../distributed/info.js";
import { topLevelLayers } from "../models/summary.js";
import { Conv2d } from "../nn/layers.js";
import type { Module } from "../nn/module.js";
import { conv2dGeometry } from "../ops/conv2d.js";
import { addModelOptions, buildModel, type ModelFlags, positiveInt, vggOptions } from "./model-options.js";

/** What `vgg info` says of each bf16 path (native/bf16.h; "reference" when the native backend is not in use). */
const bf16PathText: Record<string, string> = {
  amx: "amx, TDPBF16PS on 32x32 blocks of 16x16 tiles; convolutions as implicit GEMMs",
  avx512bf16: "avx512bf16, VDPBF16PS 12x32 micro-kernel; convolutions: the float32 kernels on rounded inputs",
  emulation:
    "emulation, float32 products of bf16-rounded values (VGG_BF16=emulate, or no AVX512_BF16 at the active level)",
  none: "reference backend",
};

interface InfoFlags extends ModelFlags {
  batchSize: number;
  threads?: number;
  backend?: BackendName;
  json?: boolean;
  webgpu?: boolean;
  distributed?: boolean;
}

export function infoCommand(): Command {
  return addModelOptions(new Command("info"), { ratio: 4 })
    .description("print the backend, CPU features, thread count and the conv kernel chosen per layer")
    .option("--batch-size <n>", "batch size the kernels are chosen for", positiveInt("--batch-size"), 128)
    .option("--threads <n>", "kernel threads", positiveInt("--threads"))
    .option(
      "--backend <name>",
      "native or reference; webgpu: the adapter as --webgpu prints it, and the native kernels",
    )
    .option("--json", "print JSON")
    .option("--webgpu", "also look for a WebGPU adapter and print it (vendor, architecture, limits)")
    .option("--distributed", "under mpirun: the ranks, their hosts and the measured all-reduce bandwidth")
    .action(async (flags: InfoFlags) => {
      if (flags.distributed) return printDistributedInfo(flags.json ?? false);
      // The GPU is opened asynchronously and has no CPU kernels to list: --backend webgpu (or
      // $VGG_BACKEND=webgpu) looks for the adapter as --webgpu does, next to the CPU backend's kernels.
      const gpu = flags.backend === "webgpu" || (!flags.backend && process.env.VGG_BACKEND === "webgpu");
      if (gpu) flags.webgpu = true;
      if (flags.backend && flags.backend !== "webgpu") setBackend(flags.backend);
      if (flags.threads) setNumThreads(flags.threads);
      const be = backend();
      const native = nativeInfo();
      const addon = loadNativeAddon();
      const model = buildModel(flags);
      const o = vggOptions(flags);
      let shape = [flags.batchSize, o.inChannels!, o.inputSize!, o.inputSize!];
      const layers: { layer: string; input: number[]; forward: string; backward: string; weight: string }[] =
        [];
      const walk = (m: Module): void => {
        const children = m.namedChildren();
        if (children.length > 0) {
          for (const [, c] of children) walk(c);
          return;
        }
        if (m instanceof Conv2d && be.name === "native" && !(addon instanceof Error)) {
          const g = conv2dGeometry(shape, m.weight.shape, { stride: m.stride, padding: m.padding });
          layers.push({
            layer: m.describe(),
            input: shape,
            forward: addon.convKernel(g, false),
            backward: addon.convKernel(g, true),
            weight: addon.convWeightKernel(g),
          });
        }
        shape = m.outputShape(shape);
      };
      for (const [, top] of topLevelLayers(model)) walk(top);
      const info = {
        backend: be.name,
        fallbackReason: backendFallbackReason(),
        cpu: cpus()[0]?.model ?? "unknown",
        cores: cpus().length,
        isa: native.isa,
        bestIsa: native.bestIsa,
        cpuFeatures: native.cpuFeatures,
        cpuHasAvx2Fma: native.cpuHasAvx2Fma,
        gemmKernel: native.gemmKernel,
        kernels: native.kernels,
        bf16Path: native.bf16Path,
        threads: be.numThreads(),
        convKernels: layers,
        webgpu: flags.webgpu ? await describeWebGpu() : undefined,
      };
      if (flags.json) {
        console.log(JSON.stringify(info, null, 2));
        return;
      }
      console.log(
        `backend: ${info.backend}${info.fallbackReason ? ` (fallback: ${info.fallbackReason})` : ""}`,
      );
      console.log(`cpu: ${info.cpu}, ${info.cores} cores; features: ${info.cpuFeatures.join(" ") || "none"}`);
      console.log(
        `isa level: ${info.isa} (best here: ${info.bestIsa}; VGG_NATIVE_ISA=portable|avx2|avx512|amx forces one)`,
      );
      console.log(`gemm: ${info.gemmKernel}; threads: ${info.threads}`);
      for (const [family, kernel] of Object.entries(info.kernels)) console.log(`  ${family}: ${kernel}`);
      console.log(`bf16 (--precision bf16): ${bf16PathText[info.bf16Path] ?? info.bf16Path}`);
      if (info.webgpu && "unavailable" in info.webgpu)
        console.log(`webgpu: none (${info.webgpu.unavailable})`);
      else if (info.webgpu) {
        const a = info.webgpu;
        console.log(`webgpu: ${a.vendor} ${a.architecture} (${a.description || a.device})`);
        console.log(
          `  limits: ${Object.entries(a.limits)
            .map(([k, v]) => `${k} ${v}`)
            .join(", ")}`,
        );
      }
      if (layers.length) {
        console.log(`conv kernels for ${flags.arch}/${flags.ratio} at batch ${flags.batchSize}:`);
        for (const l of layers)
          console.log(
            `  ${l.layer.padEnd(44)} input [${l.input.join(", ")}]: forward ${l.forward}, input gradient ${l.backward}, weight gradient ${l.weight}`,
          );
      }
    });
}
