// `vgg eval`: test loss and accuracy, per-class accuracy and the confusion matrix of a trained model.
import { Command } from "commander";
import { configureRuntime } from "../backend/index.js";
import { FASHION_MNIST_CLASSES, loadFashionMnist } from "../data/fashion-mnist.js";
import { DataLoader } from "../data/loader.js";
import { prepackForInference } from "../nn/layers.js";
import { evaluate } from "../train/trainer.js";
import { classList, selectClasses } from "./classes.js";
import {
  addModelOptions,
  addRuntimeOptions,
  imageSizeFor,
  type ModelFlags,
  positiveInt,
  type RuntimeFlags,
} from "./model-options.js";
import { loadWeightsForCli } from "./weights.js";

interface EvalFlags extends ModelFlags, RuntimeFlags {
  weights: string;
  dataDir?: string;
  limit?: number;
  batchSize: number;
  json?: boolean;
  download: boolean;
  classes?: number[];
}

export function evalCommand(): Command {
  return addRuntimeOptions(addModelOptions(new Command("eval"), { ratio: 4 }))
    .description("evaluate a trained model on the Fashion-MNIST test set")
    .requiredOption("--weights <file>", "safetensors weights (vgg-ts or PyTorch)")
    .option("--data-dir <dir>", "Fashion-MNIST folder")
    .option("--no-download", "never download the dataset")
    .option("--limit <n>", "use the first n test examples", positiveInt("--limit"))
    .option(
      "--classes <list>",
      "evaluate on these classes only, as trained with vgg train --classes",
      classList,
    )
    .option("--batch-size <n>", "batch size", positiveInt("--batch-size"), 128)
    .option("--json", "print the result as JSON")
    .action(async (flags: EvalFlags) => {
      const { device } = await configureRuntime(flags);
      const { model } = loadWeightsForCli(flags.weights, {
        ...flags,
        inputSize: flags.inputSize ?? flags.resize,
      });
      model.to(device);
      const size = imageSizeFor(model.config, flags);
      let test = await loadFashionMnist({
        dataDir: flags.dataDir,
        split: "test",
        download: flags.download,
      });
      if (flags.classes) test = selectClasses(test, flags.classes);
      const loader = new DataLoader(test, { batchSize: flags.batchSize, resize: size, limit: flags.limit });
      const names = flags.classes
        ? flags.classes.map((c) => FASHION_MNIST_CLASSES[c])
        : model.config.numClasses === 10
          ? FASHION_MNIST_CLASSES
          : null;
      let m: Awaited<ReturnType<typeof evaluate>>;
      try {
        m = await evaluate(prepackForInference(model), loader.batches(0), model.config.numClasses);
      } finally {
        await loader.close();
      }
      const perClass = m.confusion.map((row, i) => {
        const total = row.reduce((a, b) => a + b, 0);
        return {
          class: names?.[i] ?? String(i),
          correct: row[i],
          total,
          accuracy: total ? row[i] / total : 0,
        };
      });
      if (flags.json) {
        console.log(
          JSON.stringify(
            { loss: m.loss, accuracy: m.accuracy, examples: m.examples, perClass, confusion: m.confusion },
            null,
            2,
          ),
        );
        return;
      }
      console.log(
        `test loss ${m.loss.toFixed(4)}, test acc ${m.accuracy.toFixed(4)} (${m.examples} images, ${m.examplesPerSec.toFixed(1)} images/s)\n`,
      );
      const width = Math.max(5, ...perClass.map((c) => c.class.length));
      console.log(`${"class".padEnd(width)}  accuracy  correct/total`);
      for (const c of perClass)
        console.log(
          `${c.class.padEnd(width)}  ${c.accuracy.toFixed(4).padStart(8)}  ${c.correct}/${c.total}`,
        );
      console.log("\nconfusion matrix (rows: true class, columns: predicted)");
      const cell = Math.max(4, ...m.confusion.flat().map((v) => String(v).length)) + 1;
      console.log(`${"".padEnd(width)}${m.confusion.map((_, j) => String(j).padStart(cell)).join("")}`);
      m.confusion.forEach((row, i) => {
        console.log(`${perClass[i].class.padEnd(width)}${row.map((v) => String(v).padStart(cell)).join("")}`);
      });
    });
}
