// `vgg train`: d2l's experiment (VGG-11/4 on Fashion-MNIST at 224, SGD lr 0.05, 10 epochs, batch 128)
// as the defaults, with checkpoints, resumption, metrics, curves and a progress bar.
import { appendFileSync, mkdirSync, rmSync, statfsSync } from "node:fs";
import { join } from "node:path";
import { SingleBar } from "cli-progress";
import { Command, Option } from "commander";
import { noGrad } from "../autograd.js";
import { type BackendName, backend, setBackend, setNumThreads } from "../backend/index.js";
import { type FashionMnist, loadFashionMnist } from "../data/fashion-mnist.js";
import { DataLoader } from "../data/loader.js";
import { writeFileAtomic } from "../io/atomic.js";
import { parseArch, type VggModel, vgg, vggFromConfig } from "../models/vgg.js";
import * as init from "../nn/init.js";
import { Conv2d, Linear } from "../nn/layers.js";
import { SGD } from "../optim/sgd.js";
import { defaultGenerator, manualSeed } from "../rng.js";
import {
  loadInitWeights,
  readCheckpoint,
  saveCheckpoint,
  saveModel,
  type TrainState,
} from "../train/checkpoint.js";
import { type CurvePoint, curvesPng, curvesSvg } from "../train/plot.js";
import { learningRate, type ScheduleName } from "../train/schedule.js";
import { type BatchReport, evaluate, NonFiniteError, trainEpoch } from "../train/trainer.js";
import { classList, selectClasses } from "./classes.js";
import { addDashboardOptions, type DashboardFlags, startTrainDashboard } from "./dashboard.js";
import { addModelOptions, type ModelFlags, positiveInt, probability, vggOptions } from "./model-options.js";

export interface TrainFlags extends ModelFlags, DashboardFlags {
  resize: number;
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov?: boolean;
  schedule: ScheduleName;
  warmupEpochs: number;
  stepSize: number;
  gamma: number;
  init: "xavier" | "default" | "kaiming";
  seed: number;
  dataDir?: string;
  out: string;
  initWeights?: string;
  shuffle: boolean;
  augment?: boolean;
  limitTrain?: number;
  limitTest?: number;
  classes?: number[];
  threads?: number;
  backend?: BackendName;
  targetAcc?: number;
  resume?: string;
  download: boolean;
}

function nonNegative(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!(n >= 0) || !Number.isFinite(n))
      throw new Error(`Expected ${name} to be a number >= 0 but received "${v}"`);
    return n;
  };
}

export function addTrainOptions(cmd: Command): Command {
  return cmd
    .option("--resize <n>", "resize images to n x n (d2l: 224)", positiveInt("--resize"), 224)
    .option("--epochs <n>", "epochs", positiveInt("--epochs"), 10)
    .option("--batch-size <n>", "batch size", positiveInt("--batch-size"), 128)
    .option("--lr <x>", "learning rate", nonNegative("--lr"), 0.05)
    .option("--momentum <x>", "SGD momentum", nonNegative("--momentum"), 0)
    .option("--weight-decay <x>", "L2 weight decay", nonNegative("--weight-decay"), 0)
    .option("--nesterov", "Nesterov momentum (needs --momentum > 0)")
    .addOption(
      new Option("--schedule <name>", "learning-rate schedule")
        .choices(["constant", "step", "cosine"])
        .default("constant"),
    )
    .option("--warmup-epochs <n>", "linear warm-up epochs", nonNegative("--warmup-epochs"), 0)
    .option("--step-size <n>", "epochs between decays for --schedule step", positiveInt("--step-size"), 30)
    .option("--gamma <x>", "decay factor for --schedule step", nonNegative("--gamma"), 0.1)
    .addOption(
      new Option("--init <scheme>", "weight init: xavier (d2l), default (PyTorch's), kaiming")
        .choices(["xavier", "default", "kaiming"])
        .default("xavier"),
    )
    .option("--seed <n>", "seed for init, shuffling, augmentation and dropout", nonNegative("--seed"), 0)
    .option(
      "--data-dir <dir>",
      "Fashion-MNIST folder (else $FASHION_MNIST_DIR, ~/.cache/vgg-ts, /usr/share/datasets)",
    )
    .option("--no-download", "never download the dataset")
    .option("--out <dir>", "output folder for checkpoints, metrics and curves", "runs/train")
    .option(
      "--init-weights <file>",
      "start from a safetensors checkpoint (a different head is re-initialised)",
    )
    .option("--no-shuffle", "keep the training set in file order")
    .option("--augment", "random crop (padding 2) and horizontal flip")
    .option("--limit-train <n>", "use the first n training examples", positiveInt("--limit-train"))
    .option("--limit-test <n>", "use the first n test examples", positiveInt("--limit-test"))
    .option(
      "--classes <list>",
      "train and test on these classes only, e.g. 0,1,2 (relabelled 0..k-1)",
      classList,
    )
    .option("--threads <n>", "kernel threads (default: all cores)", positiveInt("--threads"))
    .addOption(new Option("--backend <name>", "kernel backend").choices(["native", "reference"]))
    .option(
      "--target-acc <a>",
      "exit non-zero if the final test accuracy is below a",
      probability("--target-acc"),
    )
    .option("--resume <dir>", "continue the run saved in dir");
}

export function trainCommand(): Command {
  return addDashboardOptions(addTrainOptions(addModelOptions(new Command("train"), { ratio: 4 })))
    .description("train a VGG on Fashion-MNIST; the defaults are the d2l chapter's recipe")
    .action(async (flags: TrainFlags, cmd: Command) => {
      const explicit = new Set(Object.keys(flags).filter((k) => cmd.getOptionValueSource(k) === "cli"));
      const dashboard = flags.dashboard ? await startTrainDashboard(flags) : undefined;
      let status = "failed";
      try {
        process.exitCode = await runTrain(flags, explicit, dashboard);
        status = process.exitCode === 0 ? "finished" : `stopped (exit code ${process.exitCode})`;
      } finally {
        await dashboard?.close(status);
      }
    });
}

/** What a run tells its observer (the live dashboard) when it starts. */
export interface TrainRunInfo {
  options: Record<string, unknown>;
  model: VggModel;
  testSet: FashionMnist;
  trainSize: number;
  testSize: number;
  stepsPerEpoch: number;
  startEpoch: number;
  epochs: number;
  /** Records of the epochs before a resume. */
  history: readonly Record<string, unknown>[];
  device: string;
}

/** Watches a run; called on the training thread between batches, so each call must be quick. */
export interface TrainObserver {
  start(run: TrainRunInfo): void;
  batch(report: BatchReport): void;
  /** Each record as it is added to metrics.jsonl. */
  record(record: Record<string, unknown>): void;
}

/** Fails before training when the output folder is unwritable or the disk cannot hold the checkpoints. */
function prepareOutDir(dir: string, bytesNeeded: number): void {
  try {
    mkdirSync(dir, { recursive: true });
    const probe = join(dir, ".write-test");
    writeFileAtomic(probe, "ok");
    rmSync(probe);
  } catch (e) {
    throw new Error(
      `Cannot write to the output folder ${dir}: ${(e as Error).message}; choose another with --out`,
    );
  }
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  if (free < bytesNeeded)
    throw new Error(
      `Not enough disk space in ${dir}: checkpoints need about ${(bytesNeeded / 1e6).toFixed(0)} MB but ${(free / 1e6).toFixed(0)} MB are free`,
    );
}

function applyInit(model: VggModel, scheme: TrainFlags["init"]): void {
  if (scheme === "default") return;
  noGrad(() => {
    for (const m of model.modules())
      if (m instanceof Conv2d || m instanceof Linear) {
        if (scheme === "xavier") init.xavierUniform_(m.weight);
        else init.kaimingNormal_(m.weight, { mode: "fan_out", nonlinearity: "relu" });
      }
  });
}

const fmt = (x: number) => x.toFixed(3);

/** Flags a resumed run may change; every other flag comes from the saved run. */
const RESUMABLE_OVERRIDES = ["epochs", "threads", "backend", "dataDir", "download", "targetAcc"] as const;

export async function runTrain(
  flags: TrainFlags,
  explicit: ReadonlySet<string> = new Set(),
  observer?: TrainObserver,
): Promise<number> {
  let resumed: ReturnType<typeof readCheckpoint> | null = null;
  if (flags.resume) {
    resumed = readCheckpoint(join(flags.resume, "checkpoint.safetensors"));
    const saved = resumed.state.options as Partial<TrainFlags>;
    const overrides: Partial<TrainFlags> = {};
    for (const k of RESUMABLE_OVERRIDES) if (explicit.has(k)) Object.assign(overrides, { [k]: flags[k] });
    flags = { ...flags, ...saved, ...overrides, out: flags.resume, resume: flags.resume };
  }
  if (flags.inputSize !== undefined && flags.inputSize !== flags.resize)
    throw new Error(
      `--input-size ${flags.inputSize} differs from --resize ${flags.resize}; for training the model is built for the resized images`,
    );
  if (flags.backend) setBackend(flags.backend);
  const threads =
    flags.threads ?? (process.env.VGG_NUM_THREADS ? Number(process.env.VGG_NUM_THREADS) : undefined);
  if (threads) setNumThreads(threads);

  const datasetClasses = flags.classes?.length ?? 10;
  const numClasses = flags.numClasses ?? datasetClasses;
  if (numClasses < datasetClasses)
    throw new Error(
      `Expected --num-classes >= ${datasetClasses} for the ${datasetClasses} classes trained on but received ${numClasses}; hint: --classes 0,1,2,3,4 trains on a subset of Fashion-MNIST's 10 classes`,
    );
  const options = { ...vggOptions({ ...flags, numClasses, inputSize: flags.resize }) };
  manualSeed(flags.seed);
  const model = resumed ? vggFromConfig(resumed.config) : vgg(parseArch(flags.arch), options);
  const numParams = model.parameters().reduce((s, p) => s + p.size, 0);
  prepareOutDir(flags.out, numParams * 4 * 4);
  if (!resumed) applyInit(model, flags.init);
  if (flags.initWeights && !resumed) {
    const { skipped } = loadInitWeights(flags.initWeights, model);
    if (skipped.length > 0)
      console.log(
        `Initialised from ${flags.initWeights}; re-initialised (shape differs): ${skipped.join(", ")}`,
      );
  }
  const optimizer = new SGD(model.parameters(), {
    lr: flags.lr,
    momentum: flags.momentum,
    weightDecay: flags.weightDecay,
    nesterov: flags.nesterov ?? false,
  });
  let startEpoch = 0;
  let history: Record<string, unknown>[] = [];
  if (resumed) {
    resumed.restore(model, optimizer);
    defaultGenerator.setState(resumed.state.rng);
    startEpoch = resumed.state.epoch;
    history = resumed.state.history;
  }

  const data = { dataDir: flags.dataDir, download: flags.download };
  let [trainSet, testSet] = await Promise.all([
    loadFashionMnist({ ...data, split: "train" }),
    loadFashionMnist({ ...data, split: "test" }),
  ]);
  if (flags.classes) {
    trainSet = selectClasses(trainSet, flags.classes);
    testSet = selectClasses(testSet, flags.classes);
  }
  const trainLoader = new DataLoader(trainSet, {
    batchSize: flags.batchSize,
    shuffle: flags.shuffle,
    seed: flags.seed,
    resize: flags.resize,
    augment: flags.augment ?? false,
    limit: flags.limitTrain,
  });
  const testLoader = new DataLoader(testSet, {
    batchSize: flags.batchSize,
    resize: flags.resize,
    limit: flags.limitTest,
  });
  const be = backend();
  const device = `cpu (${be.name}, ${be.numThreads()} thread${be.numThreads() === 1 ? "" : "s"})`;
  console.log(
    `Training ${flags.arch} /${flags.ratio} (${numParams.toLocaleString("en-US")} parameters) on ${trainLoader.size} images at ${flags.resize}x${flags.resize}, ` +
      `batch ${flags.batchSize}, lr ${flags.lr}, ${flags.epochs} epochs, on ${device}; writing to ${flags.out}`,
  );
  if (resumed) console.log(`Resuming after epoch ${startEpoch}`);
  observer?.start({
    options: { ...flags },
    model,
    testSet,
    trainSize: trainLoader.size,
    testSize: testLoader.size,
    stepsPerEpoch: trainLoader.length,
    startEpoch,
    epochs: flags.epochs,
    history: [...history],
    device,
  });

  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write("\nInterrupted: finishing the current batch (Ctrl-C again to quit at once)...\n");
  };
  process.on("SIGINT", onSigint);
  const metricsPath = join(flags.out, "metrics.jsonl");
  const stepsPerEpoch = trainLoader.length;
  const lrAt = (step: number) =>
    learningRate(
      {
        name: flags.schedule,
        baseLr: flags.lr,
        epochs: flags.epochs,
        stepsPerEpoch,
        warmupEpochs: flags.warmupEpochs,
        stepSize: flags.stepSize,
        gamma: flags.gamma,
      },
      step,
    );
  const storedOptions: Record<string, unknown> = { ...flags };
  let last: { trainLoss: number; trainAcc: number; testAcc: number; examplesPerSec: number } | null = null;
  let trainSeconds = 0;
  let trainExamples = 0;
  try {
    for (let epoch = startEpoch; epoch < flags.epochs; epoch++) {
      const bar = new SingleBar({
        format: `epoch ${epoch + 1}/${flags.epochs} |{bar}| {value}/{total} loss {loss} acc {acc} {ips} img/s ETA {eta_formatted}`,
        hideCursor: true,
        clearOnComplete: true,
        stream: process.stderr,
      });
      bar.start(stepsPerEpoch, 0, { loss: "-", acc: "-", ips: "-" });
      const pointEvery = Math.max(1, Math.floor(stepsPerEpoch / 5));
      const result = await trainEpoch(model, optimizer, trainLoader.batches(epoch), stepsPerEpoch, {
        epoch,
        lrAt,
        firstStep: epoch * stepsPerEpoch,
        shouldStop: () => interrupted,
        onBatch: (r) => {
          bar.update(r.batch + 1, {
            loss: fmt(r.meanLoss),
            acc: fmt(r.accuracy),
            ips: r.examplesPerSec.toFixed(1),
          });
          observer?.batch(r);
          if ((r.batch + 1) % pointEvery === 0 || r.batch + 1 === r.batches) {
            const point = {
              type: "batch",
              epoch: epoch + (r.batch + 1) / r.batches,
              trainLoss: r.meanLoss,
              trainAcc: r.accuracy,
              lr: r.lr,
            };
            history.push(point);
            appendFileSync(metricsPath, `${JSON.stringify(point)}\n`);
            observer?.record(point);
          }
        },
      });
      bar.stop();
      if (result.stopped) break;
      const test = await evaluate(model, testLoader.batches(0), model.config.numClasses);
      trainSeconds += result.seconds;
      trainExamples += result.examples;
      last = {
        trainLoss: result.loss,
        trainAcc: result.accuracy,
        testAcc: test.accuracy,
        examplesPerSec: result.examplesPerSec,
      };
      history.push({
        type: "epoch",
        epoch: epoch + 1,
        trainLoss: result.loss,
        trainAcc: result.accuracy,
        testLoss: test.loss,
        testAcc: test.accuracy,
        examplesPerSec: result.examplesPerSec,
        seconds: result.seconds,
        lr: optimizer.lr,
      });
      observer?.record(history[history.length - 1]);
      const state: TrainState = {
        epoch: epoch + 1,
        rng: defaultGenerator.getState(),
        options: storedOptions,
        history,
      };
      saveCheckpoint(join(flags.out, "checkpoint.safetensors"), model, optimizer, state);
      saveModel(join(flags.out, "model.safetensors"), model, { epoch: String(epoch + 1) });
      writeFileAtomic(metricsPath, `${history.map((h) => JSON.stringify(h)).join("\n")}\n`);
      writeCurves(flags.out, history, flags.epochs);
      console.log(
        `epoch ${epoch + 1}/${flags.epochs}: loss ${fmt(result.loss)}, train acc ${fmt(result.accuracy)}, test acc ${fmt(test.accuracy)}, ` +
          `${result.examplesPerSec.toFixed(1)} examples/sec (${result.seconds.toFixed(1)} s)`,
      );
    }
  } catch (e) {
    if (e instanceof NonFiniteError) {
      console.error(`Stopped: ${e.message}. The last good checkpoint is kept in ${flags.out}.`);
      return 3;
    }
    throw e;
  } finally {
    process.off("SIGINT", onSigint);
    await Promise.all([trainLoader.close(), testLoader.close()]);
  }
  if (interrupted) {
    console.error(
      `Interrupted. The last complete epoch is saved in ${flags.out}; continue with: vgg train --resume ${flags.out}`,
    );
    return 130;
  }
  if (!last) {
    const done = history.filter((h) => h.type === "epoch").at(-1);
    console.log(
      `Nothing to do: the run in ${flags.out} already completed ${startEpoch} epochs (${JSON.stringify(done)})`,
    );
    return 0;
  }
  console.log(`loss ${fmt(last.trainLoss)}, train acc ${fmt(last.trainAcc)}, test acc ${fmt(last.testAcc)}`);
  console.log(`${(trainExamples / trainSeconds).toFixed(1)} examples/sec on ${device}`);
  if (flags.targetAcc !== undefined && last.testAcc < flags.targetAcc) {
    console.error(`Test accuracy ${fmt(last.testAcc)} is below the target ${flags.targetAcc}`);
    return 2;
  }
  return 0;
}

function writeCurves(dir: string, history: Record<string, unknown>[], numEpochs: number): void {
  const points: CurvePoint[] = history.map((h) =>
    h.type === "epoch"
      ? { epoch: h.epoch as number, testAcc: h.testAcc as number }
      : { epoch: h.epoch as number, trainLoss: h.trainLoss as number, trainAcc: h.trainAcc as number },
  );
  writeFileAtomic(join(dir, "curves.svg"), curvesSvg(points, { numEpochs }));
  writeFileAtomic(join(dir, "curves.png"), curvesPng(points, { numEpochs }));
}
