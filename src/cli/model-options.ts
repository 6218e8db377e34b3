// The model and input flags shared by every command that builds a model (summary, train, eval, predict,
// serve, bench, export), and the kernel flags shared by every command that runs one: one definition each,
// so the commands cannot drift apart (test/cli-flags.test.ts walks every command's --help).
import { type Command, Option } from "commander";
import { type BackendName, type Precision, precisions } from "../backend/index.js";
import type { ModelSpec } from "../models/spec.js";
import type { VggConfig } from "../models/vgg.js";

export { buildModel, inputSizeOf, vggOptions } from "../models/spec.js";

/** The model and input flags: the training API's model specification. */
export type ModelFlags = ModelSpec;

/** --backend, --threads and --precision, for every command that runs a model (applied by configureRuntime). */
export interface RuntimeFlags {
  backend?: BackendName;
  threads?: number;
  precision?: Precision;
}

export function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1)
      throw new Error(`Expected ${name} to be a positive integer but received "${v}"`);
    return n;
  };
}

export function probability(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!(n >= 0 && n <= 1)) throw new Error(`Expected ${name} to be a number in [0, 1] but received "${v}"`);
    return n;
  };
}

export function addModelOptions(cmd: Command, defaults: { ratio?: number } = {}): Command {
  const d2lRatio = defaults.ratio ?? 1;
  return cmd
    .hook("preAction", (c) => {
      // torchvision-layout files are full width; the d2l default is the command's (4: small_conv_arch).
      if (c.opts().ratio === undefined)
        c.setOptionValue("ratio", c.opts().layout === "torchvision" ? 1 : d2lRatio);
    })
    .option(
      "--arch <arch>",
      'vgg11|vgg13|vgg16|vgg19, or blocks like "1x64,1x128,2x256,2x512,2x512"',
      "vgg11",
    )
    .option(
      "--ratio <n>",
      `divide every channel count by n (default: ${d2lRatio} for the d2l layout, 1 for torchvision)`,
      positiveInt("--ratio"),
    )
    .option(
      "--in-channels <n>",
      "input channels (default 1 for d2l, 3 for torchvision)",
      positiveInt("--in-channels"),
    )
    .option("--input-size <n>", "input height and width (default 224)", positiveInt("--input-size"))
    .option(
      "--num-classes <n>",
      "output classes (default 10 for d2l, 1000 for torchvision)",
      positiveInt("--num-classes"),
    )
    .option("--batch-norm", "add BatchNorm2d after every convolution")
    .addOption(
      new Option("--layout <layout>", "parameter layout").choices(["d2l", "torchvision"]).default("d2l"),
    )
    .option("--dropout <p>", "classifier dropout probability (default 0.5)", probability("--dropout"))
    .option(
      "--classifier-width <n>",
      "hidden width of the fully connected layers (default 4096)",
      positiveInt("--classifier-width"),
    )
    .option(
      "--resize <n>",
      "resize images to n x n, the size the model takes (default: --input-size, else the weights' size, else 224)",
      positiveInt("--resize"),
    );
}

export function addRuntimeOptions(cmd: Command): Command {
  return cmd
    .option(
      "--threads <n>",
      "kernel threads (default: all cores, or $VGG_NUM_THREADS)",
      positiveInt("--threads"),
    )
    .addOption(
      new Option(
        "--backend <name>",
        "kernel backend (webgpu: the GPU through WebGPU; default: native, or $VGG_BACKEND)",
      ).choices(["native", "reference", "webgpu"]),
    )
    .addOption(
      new Option(
        "--precision <p>",
        "bf16: convolutions and linear layers on bf16-rounded inputs with float32 sums, float32 weights (default fp32)",
      ).choices(precisions),
    );
}

/** The image size for a loaded model: --resize, which a d2l model's classifier must accept. */
export function imageSizeFor(config: VggConfig, f: ModelFlags): number {
  const size = f.resize ?? config.inputSize;
  if (config.layout !== "torchvision" && size !== config.inputSize)
    throw new Error(
      `Expected --resize ${config.inputSize} (the model's input size: its classifier is sized for it) but received --resize ${size}`,
    );
  return size;
}

/** The model configuration as strings, for a safetensors `__metadata__` block. */
export function configMetadata(config: VggConfig): Record<string, string> {
  return { format: "pt", "vgg-ts.config": JSON.stringify(config) };
}
