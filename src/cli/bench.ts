// `vgg bench`: whole-step throughput of one configuration on random data, after a warm-up.
import { Command, Option } from "commander";
import { noGrad } from "../autograd.js";
import { backend, configureRuntime, getPrecision, webGpuDevice } from "../backend/index.js";
import { summarize } from "../models/summary.js";
import { prepackForInference } from "../nn/layers.js";
import { crossEntropy } from "../ops/loss.js";
import { SGD } from "../optim/sgd.js";
import { Generator, manualSeed } from "../rng.js";
import { Tensor } from "../tensor.js";
import {
  addModelOptions,
  addRuntimeOptions,
  buildModel,
  type ModelFlags,
  positiveInt,
  type RuntimeFlags,
  vggOptions,
} from "./model-options.js";

interface BenchFlags extends ModelFlags, RuntimeFlags {
  mode: "train" | "infer";
  batchSize: number;
  iters: number;
  warmup: number;
  json?: boolean;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function benchCommand(): Command {
  return addRuntimeOptions(addModelOptions(new Command("bench"), { ratio: 4 }))
    .description("measure training or inference throughput of one configuration on random data")
    .addOption(new Option("--mode <mode>", "what to time").choices(["train", "infer"]).default("train"))
    .option("--batch-size <n>", "batch size", positiveInt("--batch-size"), 128)
    .option("--iters <n>", "timed steps", positiveInt("--iters"), 3)
    .option("--warmup <n>", "untimed steps first", positiveInt("--warmup"), 1)
    .option("--json", "print one JSON object")
    .action(async (flags: BenchFlags) => {
      const { device } = await configureRuntime(flags);
      manualSeed(0);
      const model = buildModel(flags).to(device);
      const o = vggOptions(flags);
      const size = o.inputSize!;
      const shape = [flags.batchSize, o.inChannels!, size, size];
      const s = summarize(model, [1, ...shape.slice(1)]);
      // A training step is the forward pass, the input gradient (not needed for the first layer) and
      // the weight gradient: 3 x forward MACs minus the first layer's, 2 FLOPs per MAC.
      const firstMacs = s.rows.find((r) => r.macs > 0)?.macs ?? 0;
      const flopsPerImage = flags.mode === "train" ? 2 * (3 * s.totalMacs - firstMacs) : 2 * s.totalMacs;
      const g = new Generator(1);
      const x = new Tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => g.random()),
        shape,
      ).to(device);
      const y = Int32Array.from({ length: flags.batchSize }, () => g.int(model.config.numClasses));
      const optimizer = new SGD(model.parameters(), { lr: 0.01 });
      // Inference as a server runs it: the fully connected weights packed once, as onnxruntime does.
      if (flags.mode === "infer") prepackForInference(model);
      // On a device a step is timed until its result is read back (the work is queued, then run).
      const step = async () => {
        if (flags.mode === "infer") {
          const logits = noGrad(() => model.forward(x));
          if (device !== "cpu") await logits.dataAsync();
          return;
        }
        model.train();
        const loss = crossEntropy(model.forward(x), y);
        optimizer.zeroGrad();
        loss.backward();
        optimizer.step();
        if (device !== "cpu") await loss.itemAsync();
      };
      for (let i = 0; i < flags.warmup; i++) await step();
      const times: number[] = [];
      for (let i = 0; i < flags.iters; i++) {
        const t0 = performance.now();
        await step();
        times.push((performance.now() - t0) / 1000);
      }
      const med = median(times);
      // Images over the whole timed run, slow steps included: the sustained rate a server's req/s compares with.
      const sustained = (flags.batchSize * times.length) / times.reduce((a, b) => a + b, 0);
      const be = backend();
      const gpu = webGpuDevice();
      const where = gpu ? gpu.description : `${be.name} backend, ${be.numThreads()} threads`;
      const result = {
        mode: flags.mode,
        arch: flags.arch,
        ratio: flags.ratio,
        resize: size,
        batch_size: flags.batchSize,
        backend: gpu ? "webgpu" : be.name,
        ...(gpu ? { adapter: gpu.description } : {}),
        threads: be.numThreads(),
        precision: getPrecision(),
        images_per_s: flags.batchSize / med,
        mean_images_per_s: sustained,
        gflops: (flopsPerImage * flags.batchSize) / med / 1e9,
        median_step_s: med,
        step_times_s: times,
        peak_rss_mb: process.resourceUsage().maxRSS / 1024,
      };
      if (flags.json) {
        console.log(JSON.stringify(result));
        return;
      }
      console.log(
        `${flags.mode} ${flags.arch}/${flags.ratio} at ${size}, batch ${flags.batchSize}, ${where}, ${result.precision}:\n` +
          `  ${result.images_per_s.toFixed(1)} images/s (${sustained.toFixed(1)} over the whole run), ${result.gflops.toFixed(1)} GFLOP/s, median step ${med.toFixed(3)} s, peak RSS ${result.peak_rss_mb.toFixed(0)} MB`,
      );
    });
}
