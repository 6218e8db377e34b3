// `vgg convert`: weights between d2l's and torchvision's layouts (same layers, other keys).
import { Command, Option } from "commander";
import { convertLayout } from "../interop/convert.js";
import type { Layout } from "../models/vgg.js";
import { saveModel } from "../train/checkpoint.js";
import { addModelOptions, type ModelFlags } from "./model-options.js";
import { loadWeightsForCli } from "./weights.js";

interface ConvertFlags extends ModelFlags {
  from: Layout;
  to: Layout;
  output: string;
}

export function convertCommand(): Command {
  return addModelOptions(new Command("convert"), { ratio: 4 })
    .description(
      "convert safetensors weights between the d2l and torchvision layouts (d2l models need --input-size 224, i.e. a 7x7 trunk output)",
    )
    .argument("<weights>", "safetensors weights (vgg-ts or PyTorch)")
    .addOption(
      new Option("--from <layout>", "layout of the input file")
        .choices(["d2l", "torchvision"])
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--to <layout>", "layout to write").choices(["d2l", "torchvision"]).makeOptionMandatory(),
    )
    .requiredOption("-o, --output <file>", "where to write the converted weights")
    .action((weights: string, flags: ConvertFlags) => {
      if (flags.from === flags.to)
        throw new Error(`Expected --to to differ from --from but received ${flags.to} for both`);
      // A file without metadata is described by the model flags, in the --from layout.
      const { model } = loadWeightsForCli(weights, { ...flags, layout: flags.from });
      if (model.config.layout !== flags.from)
        throw new Error(
          `Expected ${weights} to hold a ${flags.from}-layout model but its metadata says ${model.config.layout}; hint: use --from ${model.config.layout}`,
        );
      const converted = convertLayout(model, flags.to);
      saveModel(flags.output, converted);
      const c = converted.config;
      console.log(
        `wrote ${flags.output}: ${flags.from} -> ${flags.to}, ${model.stateDict().size} tensors${flags.to === "d2l" ? ` (d2l model for ${c.inputSize}x${c.inputSize} inputs)` : ""}`,
      );
    });
}
