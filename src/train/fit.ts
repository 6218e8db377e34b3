// `fit`: a whole training run as one call (d2l's train_ch6, Keras's Model.fit): build or resume the model,
// load Fashion-MNIST, train epoch by epoch with the learning-rate schedule, evaluate, and keep checkpoints,
// metrics, curves and the final weights in `out`. `vgg train` is a thin layer of flags over it.
import { appendFileSync, mkdirSync, rmSync, statfsSync } from "node:fs";
import { join } from "node:path";
import {
  type BackendName,
  configureRuntime,
  getPrecision,
  type Precision,
  webGpuDevice,
} from "../backend/index.js";
import { loadFashionMnist, selectClasses } from "../data/fashion-mnist.js";
import { DataLoader } from "../data/loader.js";
import type { DataParallel } from "../distributed/data-parallel.js";
import { writeFileAtomic } from "../io/atomic.js";
import { type ModelSpec, vggOptions } from "../models/spec.js";
import { parseArch, type VggModel, vgg, vggFromConfig } from "../models/vgg.js";
import { SGD } from "../optim/sgd.js";
import { defaultGenerator, manualSeed } from "../rng.js";
import {
  loadInitWeights,
  readCheckpoint,
  readHostState,
  saveCheckpoint,
  saveModel,
  type TrainState,
} from "./checkpoint.js";
import type { EpochSummary, TrainCallback } from "./events.js";
import { applyInit, type InitScheme } from "./init.js";
import { type CurvePoint, curvesPng, curvesSvg } from "./plot.js";
import { learningRate, type ScheduleName } from "./schedule.js";
import { evaluate, trainEpoch } from "./trainer.js";

export interface FitOptions extends ModelSpec {
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
  init: InitScheme;
  /** Fixes init, shuffling, augmentation and dropout. */
  seed: number;
  dataDir?: string;
  /** Download Fashion-MNIST when it is not found locally. */
  download: boolean;
  /** Folder for checkpoint.safetensors, model.safetensors, metrics.jsonl and the curves. */
  out: string;
  initWeights?: string;
  shuffle: boolean;
  augment?: boolean;
  limitTrain?: number;
  limitTest?: number;
  /** Train and test on these classes only, relabelled 0..k-1 in the order given. */
  classes?: number[];
  threads?: number;
  backend?: BackendName;
  /** "bf16": mixed precision (setPrecision), float32 master weights; unset keeps the current precision. */
  precision?: Precision;
  /** Kept with the run (the command line fails below it); fit itself only reports. */
  targetAcc?: number;
  /** A run folder to continue; its saved options win over these, except RESUMABLE_OVERRIDES. */
  resume?: string;
}

/** The d2l chapter's recipe: VGG-11/4 on Fashion-MNIST at 224, SGD lr 0.05, 10 epochs, batch 128. */
export const FIT_DEFAULTS = {
  arch: "vgg11",
  layout: "d2l",
  resize: 224,
  epochs: 10,
  batchSize: 128,
  lr: 0.05,
  momentum: 0,
  weightDecay: 0,
  schedule: "constant",
  warmupEpochs: 0,
  stepSize: 30,
  gamma: 0.1,
  init: "xavier",
  seed: 0,
  download: true,
  out: "runs/train",
  shuffle: true,
} as const satisfies Partial<FitOptions>;

/** Options a resumed run may change; every other option comes from the saved run. */
export const RESUMABLE_OVERRIDES = [
  "epochs",
  "threads",
  "backend",
  "precision",
  "dataDir",
  "download",
  "targetAcc",
] as const;

export interface FitHooks {
  callbacks?: TrainCallback[];
  /** Aborting stops the run after the current batch; the last complete epoch stays saved. */
  signal?: AbortSignal;
  /** Where the run's lines go (default console.log). */
  log?: (line: string) => void;
  /**
   * Data-parallel training over MPI (src/distributed/): this process is one rank; batches are split over
   * the ranks, gradients summed; only rank 0 calls the callbacks, logs and writes files.
   */
  distributed?: DataParallel;
}

export interface FitResult {
  /** completed: every epoch ran; interrupted: the signal stopped it; nothing-to-do: a resumed run was done. */
  status: "completed" | "interrupted" | "nothing-to-do";
  /** The options the run used (after resume and defaults). */
  options: FitOptions;
  model: VggModel;
  optimizer: SGD;
  /** The last epoch trained by this call, if any. */
  last: EpochSummary | null;
  /** Every batch point and epoch record of the run, resumed epochs included. */
  history: Record<string, unknown>[];
  /** Over the epochs this call trained. */
  examplesPerSec: number;
  device: string;
}

/** Fills the defaults; ratio defaults to 4 (d2l's small_conv_arch) for the d2l layout, 1 for torchvision. */
export function resolveFitOptions(o: Partial<FitOptions>): FitOptions {
  const given = Object.fromEntries(
    Object.entries(o).filter(([, v]) => v !== undefined),
  ) as Partial<FitOptions>;
  const merged = { ...FIT_DEFAULTS, ...given } as FitOptions;
  merged.ratio ??= merged.layout === "torchvision" ? 1 : 4;
  if (given.resize === undefined && given.inputSize !== undefined) merged.resize = given.inputSize;
  return merged;
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

/** What a distributed run's surviving ranks say when the job ends early after `epoch` was saved. */
function intactNote(epoch: number, out: string): string {
  return `The checkpoint of epoch ${epoch} in ${out} is intact; continue with: mpirun -np N vgg train --distributed --resume ${out}`;
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

/**
 * Trains as `options` say (missing fields take FIT_DEFAULTS). Throws NonFiniteError when the loss or a
 * gradient stops being finite (the last good checkpoint is kept), and plain Errors for bad options, an
 * unwritable `out` or missing data, before any training.
 */
export async function fit(options: Partial<FitOptions> = {}, hooks: FitHooks = {}): Promise<FitResult> {
  try {
    return await fitRun(options, hooks);
  } catch (e) {
    // A rank that fails while setting up tells the others, which stop too (DataParallel.agree).
    await hooks.distributed?.failedBeforeStart(e as Error);
    throw e;
  }
}

async function fitRun(options: Partial<FitOptions>, hooks: FitHooks): Promise<FitResult> {
  const dp = hooks.distributed;
  const writes = !dp || dp.isRoot;
  const log = writes ? (hooks.log ?? ((line: string) => console.log(line))) : () => {};
  const callbacks = writes ? (hooks.callbacks ?? []) : [];
  let o = resolveFitOptions(options);
  let resumed: ReturnType<typeof readCheckpoint> | null = null;
  if (o.resume) {
    resumed = readCheckpoint(join(o.resume, "checkpoint.safetensors"));
    const saved = resumed.state.options as Partial<FitOptions>;
    const overrides: Partial<FitOptions> = {};
    for (const k of RESUMABLE_OVERRIDES)
      if (options[k] !== undefined) Object.assign(overrides, { [k]: options[k] });
    o = { ...o, ...saved, ...overrides, out: o.resume, resume: o.resume };
  }
  if (o.inputSize !== undefined && o.inputSize !== o.resize)
    throw new Error(
      `--input-size ${o.inputSize} differs from --resize ${o.resize}; for training the model is built for the resized images`,
    );
  if (dp && (o.backend ?? process.env.VGG_BACKEND) === "webgpu")
    throw new Error("Distributed training runs on the CPU backends; --backend webgpu is for one process");
  const { backend: be, device: where } = await configureRuntime(o);

  const datasetClasses = o.classes?.length ?? 10;
  const numClasses = o.numClasses ?? datasetClasses;
  if (numClasses < datasetClasses)
    throw new Error(
      `Expected --num-classes >= ${datasetClasses} for the ${datasetClasses} classes trained on but received ${numClasses}; hint: --classes 0,1,2,3,4 trains on a subset of Fashion-MNIST's 10 classes`,
    );
  manualSeed(o.seed);
  const model = resumed
    ? vggFromConfig(resumed.config)
    : vgg(parseArch(o.arch), vggOptions({ ...o, numClasses, inputSize: o.resize }));
  const numParams = model.parameters().reduce((s, p) => s + p.size, 0);
  if (writes) prepareOutDir(o.out, numParams * 4 * 4);
  if (!resumed) applyInit(model, o.init);
  if (o.initWeights && !resumed) {
    const { skipped } = loadInitWeights(o.initWeights, model);
    if (skipped.length > 0)
      log(`Initialised from ${o.initWeights}; re-initialised (shape differs): ${skipped.join(", ")}`);
  }
  // The model is built, initialised and restored on the host, then moved (the optimiser keeps the same
  // Parameter objects; momentum buffers from a checkpoint go to the device at their first step).
  if (where !== "cpu") model.to(where);
  const optimizer = new SGD(model.parameters(), {
    lr: o.lr,
    momentum: o.momentum,
    weightDecay: o.weightDecay,
    nesterov: o.nesterov ?? false,
  });
  let startEpoch = 0;
  let history: Record<string, unknown>[] = [];
  if (resumed) {
    // (loadStateDict writes to the device where the model lives.)
    resumed.restore(model, optimizer);
    defaultGenerator.setState(resumed.state.rng);
    startEpoch = resumed.state.epoch;
    history = resumed.state.history;
  }

  const data = { dataDir: o.dataDir, download: o.download };
  let [trainSet, testSet] = await Promise.all([
    loadFashionMnist({ ...data, split: "train" }),
    loadFashionMnist({ ...data, split: "test" }),
  ]);
  if (o.classes) {
    trainSet = selectClasses(trainSet, o.classes);
    testSet = selectClasses(testSet, o.classes);
  }
  const trainLoader = new DataLoader(trainSet, {
    batchSize: o.batchSize,
    shuffle: o.shuffle,
    seed: o.seed,
    resize: o.resize,
    augment: o.augment ?? false,
    limit: o.limitTrain,
  });
  const testLoader = new DataLoader(testSet, {
    batchSize: o.batchSize,
    resize: o.resize,
    limit: o.limitTest,
  });
  const bf16 = getPrecision() === "bf16" ? ", bf16 mixed precision" : "";
  let device =
    where === "cpu"
      ? `cpu (${be.name}, ${be.numThreads()} thread${be.numThreads() === 1 ? "" : "s"}${bf16})`
      : (webGpuDevice()?.description ?? where);
  if (dp) {
    // Every rank got here: from now on they run in step. Rank 0's weights are everyone's.
    await dp.agree(null);
    await dp.broadcastModel(model);
    device = `${dp.size} MPI processes x ${device}`;
    dp.setExitNote(
      resumed ? intactNote(startEpoch, o.out) : `No epoch had completed, so nothing was saved in ${o.out}.`,
    );
  }
  log(
    `Training ${o.arch} /${o.ratio} (${numParams.toLocaleString("en-US")} parameters) on ${trainLoader.size} images at ${o.resize}x${o.resize}, ` +
      `batch ${o.batchSize}, lr ${o.lr}, ${o.epochs} epochs, on ${device}; writing to ${o.out}`,
  );
  if (resumed) log(`Resuming after epoch ${startEpoch}`);
  const stepsPerEpoch = trainLoader.length;
  for (const c of callbacks)
    c.trainBegin?.({
      options: { ...o },
      model,
      testSet,
      trainSize: trainLoader.size,
      testSize: testLoader.size,
      stepsPerEpoch,
      startEpoch,
      epochs: o.epochs,
      history: [...history],
      device,
    });

  const metricsPath = join(o.out, "metrics.jsonl");
  const lrAt = (step: number) =>
    learningRate(
      {
        name: o.schedule,
        baseLr: o.lr,
        epochs: o.epochs,
        stepsPerEpoch,
        warmupEpochs: o.warmupEpochs,
        stepSize: o.stepSize,
        gamma: o.gamma,
      },
      step,
    );
  const addRecord = (r: Record<string, unknown>) => {
    history.push(r);
    for (const c of callbacks) c.record?.(r);
  };
  const storedOptions: Record<string, unknown> = { ...o };
  let last: EpochSummary | null = null;
  let trainSeconds = 0;
  let trainExamples = 0;
  let interrupted = false;
  try {
    for (let epoch = startEpoch; epoch < o.epochs; epoch++) {
      for (const c of callbacks) c.epochBegin?.(epoch, stepsPerEpoch);
      const pointEvery = Math.max(1, Math.floor(stepsPerEpoch / 5));
      const result = await trainEpoch(model, optimizer, trainLoader.batches(epoch), stepsPerEpoch, {
        epoch,
        lrAt,
        firstStep: epoch * stepsPerEpoch,
        shouldStop: () => hooks.signal?.aborted ?? false,
        distributed: dp,
        onBatch: (r) => {
          for (const c of callbacks) c.batchEnd?.(r);
          if ((r.batch + 1) % pointEvery === 0 || r.batch + 1 === r.batches) {
            const point = {
              type: "batch",
              epoch: epoch + (r.batch + 1) / r.batches,
              trainLoss: r.meanLoss,
              trainAcc: r.accuracy,
              lr: r.lr,
            };
            if (writes) appendFileSync(metricsPath, `${JSON.stringify(point)}\n`);
            addRecord(point);
          }
        },
      });
      if (result.stopped) {
        interrupted = true;
        for (const c of callbacks) c.epochStopped?.(epoch);
        break;
      }
      // Batch norm's running statistics are per rank; rank 0's are evaluated and saved (as PyTorch DDP).
      await dp?.broadcastBuffers(model);
      const test = await evaluate(model, testLoader.batches(0), model.config.numClasses, dp);
      trainSeconds += result.seconds;
      trainExamples += result.examples;
      last = {
        epoch: epoch + 1,
        epochs: o.epochs,
        trainLoss: result.loss,
        trainAcc: result.accuracy,
        testLoss: test.loss,
        testAcc: test.accuracy,
        examplesPerSec: result.examplesPerSec,
        seconds: result.seconds,
        lr: optimizer.lr,
      };
      const { epochs: _, ...record } = last;
      addRecord({ type: "epoch", ...record });
      const state: TrainState = {
        epoch: epoch + 1,
        rng: defaultGenerator.getState(),
        options: storedOptions,
        history,
      };
      if (writes) {
        // Weights on a device are read back once per epoch, for the two files.
        const host = where === "cpu" ? undefined : await readHostState(model, optimizer);
        saveCheckpoint(join(o.out, "checkpoint.safetensors"), model, optimizer, state, host);
        saveModel(join(o.out, "model.safetensors"), model, { epoch: String(epoch + 1) }, host);
        writeFileAtomic(metricsPath, `${history.map((h) => JSON.stringify(h)).join("\n")}\n`);
        writeCurves(o.out, history, o.epochs);
      }
      if (dp) {
        await dp.checkInSync(model);
        dp.setExitNote(intactNote(epoch + 1, o.out));
      }
      for (const c of callbacks) c.epochEnd?.(last);
    }
  } finally {
    await Promise.all([trainLoader.close(), testLoader.close()]);
  }
  const status = interrupted ? "interrupted" : last || startEpoch < o.epochs ? "completed" : "nothing-to-do";
  return {
    status,
    options: o,
    model,
    optimizer,
    last,
    history,
    examplesPerSec: trainSeconds > 0 ? trainExamples / trainSeconds : 0,
    device,
  };
}
