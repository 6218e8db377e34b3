// `vgg export`: a weights file (vgg-ts or PyTorch) to an ONNX model with a dynamic batch dimension.
import { Command, Option } from "commander";
import { exportOnnx } from "../interop/onnx.js";
import { writeFileAtomic } from "../io/atomic.js";
import { addModelOptions, type ModelFlags, positiveInt } from "./model-options.js";
import { loadWeightsForCli } from "./weights.js";

interface ExportFlags extends ModelFlags {
  weights: string;
  format: "onnx";
  output: string;
  opset: number;
}

export function exportCommand(): Command {
  return addModelOptions(new Command("export"), { ratio: 4 })
    .description("export a model to ONNX (batch dimension dynamic; height and width fixed by --input-size)")
    .requiredOption("--weights <file>", "safetensors weights (vgg-ts or PyTorch)")
    .addOption(new Option("--format <format>", "output format").choices(["onnx"]).default("onnx"))
    .requiredOption("-o, --output <file>", "where to write the model")
    .option("--opset <n>", "ONNX operator set version (>= 13)", positiveInt("--opset"), 13)
    .action((flags: ExportFlags) => {
      const { model } = loadWeightsForCli(flags.weights, flags);
      model.eval();
      const cfg = model.config;
      // A torchvision model takes any size; --input-size picks the one the ONNX graph is fixed to.
      const inputSize = cfg.layout === "torchvision" ? (flags.inputSize ?? cfg.inputSize) : cfg.inputSize;
      const bytes = exportOnnx(model, { inputSize, opset: flags.opset });
      writeFileAtomic(flags.output, bytes);
      console.log(
        `wrote ${flags.output} (${(bytes.length / 1e6).toFixed(2)} MB, opset ${flags.opset}): input [batch, ${cfg.inChannels}, ${inputSize}, ${inputSize}] -> logits [batch, ${cfg.numClasses}]`,
      );
    });
}
