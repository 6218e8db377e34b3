// The model flags shared by summary, train, eval, predict and export.
import { type Command, Option } from "commander";
import {
  type Layout,
  parseArch,
  type VggConfig,
  type VggModel,
  type VggOptions,
  vgg,
} from "../models/vgg.js";

export interface ModelFlags {
  arch: string;
  ratio: number;
  inChannels?: number;
  inputSize?: number;
  numClasses?: number;
  batchNorm?: boolean;
  layout: Layout;
  dropout?: number;
  classifierWidth?: number;
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
    );
}

export function vggOptions(f: ModelFlags): VggOptions {
  const tv = f.layout === "torchvision";
  return {
    inChannels: f.inChannels ?? (tv ? 3 : 1),
    numClasses: f.numClasses ?? (tv ? 1000 : 10),
    inputSize: f.inputSize ?? 224,
    widthRatio: f.ratio,
    batchNorm: f.batchNorm ?? false,
    dropout: f.dropout,
    classifierWidth: f.classifierWidth,
    layout: f.layout,
  };
}

export function buildModel(f: ModelFlags): VggModel {
  return vgg(parseArch(f.arch), vggOptions(f));
}

/** The model configuration as strings, for a safetensors `__metadata__` block. */
export function configMetadata(config: VggConfig): Record<string, string> {
  return { format: "pt", "vgg-ts.config": JSON.stringify(config) };
}
