// `vgg predict`: top-k classes with probabilities for PNG/JPEG images of any size, colour or grey.
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { noGrad } from "../autograd.js";
import { configureRuntime } from "../backend/index.js";
import { bytesToInput, classNames, inputShape, topClasses } from "../serve/classify.js";
import { Tensor } from "../tensor.js";
import {
  addModelOptions,
  addRuntimeOptions,
  imageSizeFor,
  type ModelFlags,
  positiveInt,
  type RuntimeFlags,
} from "./model-options.js";
import { loadWeightsForCli } from "./weights.js";

interface PredictFlags extends ModelFlags, RuntimeFlags {
  weights: string;
  top: number;
  invert?: boolean;
  json?: boolean;
}

export function predictCommand(): Command {
  return addRuntimeOptions(addModelOptions(new Command("predict"), { ratio: 4 }))
    .description("classify images (PNG or JPEG) with a trained model")
    .argument("<images...>", "image files")
    .requiredOption("--weights <file>", "safetensors weights (vgg-ts or PyTorch)")
    .option("--top <k>", "how many classes to show", positiveInt("--top"), 5)
    .option(
      "--invert",
      "invert grey levels (dark item on light background -> Fashion-MNIST's light on black)",
    )
    .option("--json", "print the result as JSON")
    .action(async (images: string[], flags: PredictFlags) => {
      const { device } = await configureRuntime(flags);
      const { model } = loadWeightsForCli(flags.weights, flags);
      model.to(device).eval();
      const cfg = model.config;
      // Checks --resize against a d2l model's input size; an ImageNet model takes any crop size.
      imageSizeFor(cfg, flags);
      const names = classNames(cfg);
      const results = [];
      for (const file of images) {
        const x = bytesToInput(readFileSync(file), file, cfg, flags.invert, flags.resize);
        const input = new Tensor(x, [1, ...inputShape(cfg, flags.resize)]).to(device);
        const logits = noGrad(() => model.forward(input));
        results.push({ file, top: topClasses(await logits.dataAsync(), flags.top, names) });
      }
      if (flags.json) {
        console.log(JSON.stringify(results, null, 2));
        return;
      }
      for (const r of results) {
        console.log(r.file);
        for (const t of r.top) console.log(`  ${(t.probability * 100).toFixed(1).padStart(5)}%  ${t.name}`);
      }
    });
}
