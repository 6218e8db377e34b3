// The training page's run, free of the DOM so Node can run it too: the d2l recipe (VGG-11/4 on
// Fashion-MNIST, 1 channel, SGD lr 0.05 without momentum, batch 128, Xavier init, shuffled by the seed)
// at 32x32, set up and stepped in the order `fit` uses (seed, build, init, move, optimiser, loaders,
// trainEpoch, evaluate), so the same seed and batches give fit's losses on the same device.
import type { Dataset } from "../../data/loader.js";
import { DataLoader } from "../../data/loader.js";
import { parseArch, type VggModel, vgg } from "../../models/vgg.js";
import { SGD } from "../../optim/sgd.js";
import { manualSeed } from "../../rng.js";
import type { EpochSummary } from "../../train/events.js";
import { applyInit } from "../../train/init.js";
import { type BatchReport, evaluate, trainEpoch } from "../../train/trainer.js";

/** The model the page trains: d2l's small_conv_arch (VGG-11 channels / 4) for 28x28 images resized to 32. */
export const TAB_MODEL = {
  arch: "vgg11",
  ratio: 4,
  layout: "d2l",
  inChannels: 1,
  inputSize: 32,
  numClasses: 10,
} as const;

export interface TabOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  seed: number;
  /** Use the first n training (test) images, in file order. */
  limitTrain: number;
  limitTest: number;
  /** The model's width: channels divided by `ratio` (d2l: 4), the classifier's hidden width (d2l: 4096). */
  ratio: number;
  classifierWidth: number;
}

/** The d2l recipe's numbers (fit's defaults); the page lets the epochs and the image counts shrink. */
export const TAB_DEFAULTS: TabOptions = {
  epochs: 10,
  batchSize: 128,
  lr: 0.05,
  seed: 0,
  limitTrain: 60_000,
  limitTest: 10_000,
  ratio: TAB_MODEL.ratio,
  classifierWidth: 4096,
};

/** The options with each field checked; throws saying which is wrong and what was received. */
export function checkTabOptions(o: TabOptions): TabOptions {
  for (const k of ["epochs", "batchSize", "limitTrain", "limitTest", "ratio", "classifierWidth"] as const)
    if (!Number.isInteger(o[k]) || o[k] < 1)
      throw new RangeError(`Expected ${k} to be a whole number >= 1 but received ${o[k]}`);
  if (!Number.isInteger(o.seed) || o.seed < 0)
    throw new RangeError(`Expected seed to be a whole number >= 0 but received ${o.seed}`);
  if (!(o.lr > 0) || !Number.isFinite(o.lr))
    throw new RangeError(`Expected lr to be a number > 0 but received ${o.lr}`);
  return o;
}

/** A point of the curves, as fit writes them to metrics.jsonl (the dashboard's records). */
export type TabRecord =
  | { type: "batch"; epoch: number; trainLoss: number; trainAcc: number; lr: number }
  | ({ type: "epoch" } & Omit<EpochSummary, "epochs">);

export interface TabHooks {
  batchEnd?(r: BatchReport): void;
  record?(r: TabRecord): void;
  epochEnd?(s: EpochSummary): void;
  /** Checked between batches; true stops the run after the current one. */
  shouldStop?(): boolean;
}

export interface TabResult {
  model: VggModel;
  history: TabRecord[];
  stopped: boolean;
  /** Every step's loss, in order. */
  losses: number[];
}

/**
 * Trains on `device` ("webgpu" once useBackend("webgpu") has opened one, else the host's backend).
 * The model is built and initialised on the host, then moved, as fit does.
 */
export async function trainInTab(
  options: TabOptions,
  train: Dataset,
  test: Dataset,
  device: "cpu" | "webgpu",
  hooks: TabHooks = {},
): Promise<TabResult> {
  const o = checkTabOptions(options);
  manualSeed(o.seed);
  const model = vgg(parseArch(TAB_MODEL.arch), {
    widthRatio: o.ratio,
    classifierWidth: o.classifierWidth,
    layout: TAB_MODEL.layout,
    inChannels: TAB_MODEL.inChannels,
    inputSize: TAB_MODEL.inputSize,
    numClasses: TAB_MODEL.numClasses,
  });
  applyInit(model, "xavier");
  if (device !== "cpu") model.to(device);
  const optimizer = new SGD(model.parameters(), { lr: o.lr, momentum: 0, weightDecay: 0 });
  const loaderOf = (set: Dataset, limit: number, shuffle: boolean) =>
    new DataLoader(set, {
      batchSize: o.batchSize,
      shuffle,
      seed: o.seed,
      resize: TAB_MODEL.inputSize,
      limit,
      workers: 0,
    });
  const trainLoader = loaderOf(train, o.limitTrain, true);
  const testLoader = loaderOf(test, o.limitTest, false);
  const steps = trainLoader.length;
  const history: TabRecord[] = [];
  const losses: number[] = [];
  const add = (r: TabRecord) => {
    history.push(r);
    hooks.record?.(r);
  };
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    const pointEvery = Math.max(1, Math.floor(steps / 5));
    const result = await trainEpoch(model, optimizer, trainLoader.batches(epoch), steps, {
      epoch,
      shouldStop: hooks.shouldStop,
      onBatch: (r) => {
        losses.push(r.loss);
        hooks.batchEnd?.(r);
        if ((r.batch + 1) % pointEvery === 0 || r.batch + 1 === r.batches)
          add({
            type: "batch",
            epoch: epoch + (r.batch + 1) / r.batches,
            trainLoss: r.meanLoss,
            trainAcc: r.accuracy,
            lr: r.lr,
          });
      },
    });
    if (result.stopped) return { model, history, stopped: true, losses };
    const t = await evaluate(model, testLoader.batches(0), TAB_MODEL.numClasses);
    const summary: EpochSummary = {
      epoch: epoch + 1,
      epochs: o.epochs,
      trainLoss: result.loss,
      trainAcc: result.accuracy,
      testLoss: t.loss,
      testAcc: t.accuracy,
      examplesPerSec: result.examplesPerSec,
      seconds: result.seconds,
      lr: optimizer.lr,
    };
    const { epochs: _, ...record } = summary;
    add({ type: "epoch", ...record });
    hooks.epochEnd?.(summary);
  }
  return { model, history, stopped: false, losses };
}
