// `vgg predict`: top-k classes with probabilities for PNG/JPEG images of any size, colour or grey.
import { Command } from "commander";
import { noGrad } from "../autograd.js";
import { FASHION_MNIST_CLASSES } from "../data/fashion-mnist.js";
import { IMAGENET_CLASSES } from "../interop/imagenet-classes.js";
import { preprocessImagenet, preprocessSmall, readImage } from "../io/image.js";
import { Tensor } from "../tensor.js";
import {
  addModelOptions,
  addRuntimeOptions,
  applyRuntimeFlags,
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

export function softmax(logits: Float32Array): Float64Array {
  const max = Math.max(...logits);
  const e = Float64Array.from(logits, (v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
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
    .action((images: string[], flags: PredictFlags) => {
      applyRuntimeFlags(flags);
      const { model } = loadWeightsForCli(flags.weights, flags);
      model.eval();
      const cfg = model.config;
      const imagenet = cfg.layout === "torchvision" && cfg.inChannels === 3;
      // ImageNet preprocessing is torchvision's (resize 256, centre crop 224) unless --resize asks otherwise.
      const size = imagenet ? (flags.resize ?? 224) : imageSizeFor(cfg, flags);
      const names =
        cfg.numClasses === 10 ? FASHION_MNIST_CLASSES : cfg.numClasses === 1000 ? IMAGENET_CLASSES : null;
      const results = images.map((file) => {
        const img = readImage(file);
        const x = imagenet
          ? preprocessImagenet(img, Math.round((size * 256) / 224), size)
          : preprocessSmall(img, cfg.inChannels, size, flags.invert);
        const logits = noGrad(() => model.forward(new Tensor(x, [1, cfg.inChannels, size, size])));
        const p = softmax(logits.data);
        const top = [...p.keys()]
          .sort((a, b) => p[b] - p[a])
          .slice(0, flags.top)
          .map((i) => ({ class: i, name: names?.[i] ?? `class ${i}`, probability: p[i] }));
        return { file, top };
      });
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
