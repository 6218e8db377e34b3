// The training loop: one epoch of SGD over a loader, evaluation with a confusion matrix, and d2l's
// metrics (mean loss, accuracy, examples per second).
import { noGrad } from "../autograd.js";
import type { Batch } from "../data/loader.js";
import { type DataParallel, shardRange } from "../distributed/data-parallel.js";
import type { Module } from "../nn/module.js";
import { crossEntropy } from "../ops/loss.js";
import type { SGD } from "../optim/sgd.js";
import { Tensor } from "../tensor.js";

/** Thrown when the loss or a gradient stops being finite; says where. */
export class NonFiniteError extends Error {
  constructor(
    readonly epoch: number,
    readonly batch: number,
    what: string,
  ) {
    super(
      `${what} is not finite at epoch ${epoch + 1}, batch ${batch + 1}; lower the learning rate (--lr) or check the data`,
    );
  }
}

export interface BatchReport {
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  /** Running means over the epoch so far. */
  meanLoss: number;
  accuracy: number;
  examples: number;
  examplesPerSec: number;
  lr: number;
}

export interface EpochMetrics {
  loss: number;
  accuracy: number;
  examples: number;
  seconds: number;
  examplesPerSec: number;
}

/** Mean loss, accuracy and throughput of a pass that started at `start` (performance.now()). */
function epochMetrics(lossSum: number, correct: number, examples: number, start: number): EpochMetrics {
  const seconds = (performance.now() - start) / 1000;
  return {
    loss: lossSum / Math.max(1, examples),
    accuracy: correct / Math.max(1, examples),
    examples,
    seconds,
    examplesPerSec: examples / seconds,
  };
}

function countCorrect(
  logits: Float32Array,
  targets: Int32Array,
  classes: number,
  predictions?: Int32Array,
): number {
  let correct = 0;
  for (let i = 0; i < targets.length; i++) {
    let best = 0;
    for (let j = 1; j < classes; j++) if (logits[i * classes + j] > logits[i * classes + best]) best = j;
    if (predictions) predictions[i] = best;
    if (best === targets[i]) correct++;
  }
  return correct;
}

/** The batch's images as a tensor where the model's parameters live. */
function input(model: Module, batch: Batch): Tensor {
  const x = new Tensor(batch.x, batch.shape);
  const device = model.device();
  return device === "cpu" ? x : x.to(device);
}

/** Frees a device input's copy once its step is queued (the host's is the loader's own array). */
function dropInput(x: Tensor): void {
  x.deviceStorage?.release();
}

/** A sum is finite only if every term is (barring overflow, which is as bad). */
function gradientsFinite(optimizer: SGD): boolean {
  for (const p of optimizer.params) {
    const grad = p.peekGrad();
    if (!grad) continue;
    let s = 0;
    const g = grad.data;
    for (let i = 0; i < g.length; i++) s += g[i];
    if (!Number.isFinite(s)) return false;
  }
  return true;
}

export interface TrainEpochOptions {
  epoch: number;
  /** Called before each step with the global step index; returns the learning rate to use. */
  lrAt?: (step: number) => number;
  firstStep?: number;
  onBatch?: (r: BatchReport) => void;
  /** Checked between batches; when it returns true the epoch stops early (Ctrl-C). */
  shouldStop?: () => boolean;
  /** Data-parallel training: this process's share of every batch, gradients summed over the ranks. */
  distributed?: DataParallel;
}

export async function trainEpoch(
  model: Module,
  optimizer: SGD,
  batches: AsyncIterable<Batch>,
  numBatches: number,
  o: TrainEpochOptions,
): Promise<EpochMetrics & { stopped: boolean }> {
  model.train();
  const start = performance.now();
  let lossSum = 0;
  let correct = 0;
  let examples = 0;
  let i = 0;
  let stopped = false;
  const report = (value: number) => {
    const seconds = (performance.now() - start) / 1000;
    o.onBatch?.({
      epoch: o.epoch,
      batch: i,
      batches: numBatches,
      loss: value,
      meanLoss: lossSum / examples,
      accuracy: correct / examples,
      examples,
      examplesPerSec: examples / seconds,
      lr: optimizer.lr,
    });
    i++;
  };
  for await (const batch of batches) {
    const dp = o.distributed;
    if (dp) {
      // Every rank decides together: a stop wish is summed with the batch's metrics.
      if (o.lrAt) optimizer.lr = o.lrAt((o.firstStep ?? 0) + i);
      const r = await dp.trainStep(model, optimizer, batch, o.shouldStop?.() ?? false, countCorrect);
      if (!Number.isFinite(r.lossSum)) throw new NonFiniteError(o.epoch, i, "the loss");
      if (!gradientsFinite(optimizer)) throw new NonFiniteError(o.epoch, i, "a gradient");
      optimizer.step();
      lossSum += r.lossSum;
      correct += r.correct;
      examples += r.examples;
      report(r.lossSum / r.examples);
      if (r.stop) {
        stopped = true;
        break;
      }
      continue;
    }
    if (o.shouldStop?.()) {
      stopped = true;
      break;
    }
    if (o.lrAt) optimizer.lr = o.lrAt((o.firstStep ?? 0) + i);
    const x = input(model, batch);
    if (x.deviceStorage) {
      // On a device the whole step is queued before anything is read: the loss and the logits come
      // back once it has run. A non-finite gradient shows in the next batch's loss (reading every
      // gradient would copy the weights' worth to the host each step).
      const logits = model.forward(x);
      const loss = crossEntropy(logits, batch.y);
      optimizer.zeroGrad();
      loss.backward();
      optimizer.step();
      dropInput(x);
      const [value, scores] = await Promise.all([loss.itemAsync(), logits.dataAsync()]);
      if (!Number.isFinite(value)) throw new NonFiniteError(o.epoch, i, "the loss");
      const n = batch.y.length;
      lossSum += value * n;
      correct += countCorrect(scores, batch.y, logits.shape[1]);
      examples += n;
      report(value);
      continue;
    }
    const logits = model.forward(x);
    const loss = crossEntropy(logits, batch.y);
    const value = loss.item();
    if (!Number.isFinite(value)) throw new NonFiniteError(o.epoch, i, "the loss");
    optimizer.zeroGrad();
    loss.backward();
    if (!gradientsFinite(optimizer)) throw new NonFiniteError(o.epoch, i, "a gradient");
    optimizer.step();
    const n = batch.y.length;
    lossSum += value * n;
    correct += countCorrect(logits.data, batch.y, logits.shape[1]);
    examples += n;
    report(value);
  }
  return { ...epochMetrics(lossSum, correct, examples, start), stopped };
}

export interface EvalMetrics extends EpochMetrics {
  /** confusion[true][predicted] counts. */
  confusion: number[][];
}

/** Loss, accuracy and confusion matrix in evaluation mode (dropout off, batch-norm running stats). */
export async function evaluate(
  model: Module,
  batches: AsyncIterable<Batch>,
  numClasses: number,
  distributed?: DataParallel,
): Promise<EvalMetrics> {
  model.eval();
  const start = performance.now();
  const confusion = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  let lossSum = 0;
  let correct = 0;
  let examples = 0;
  for await (let batch of batches) {
    if (distributed) {
      // Each rank evaluates its rows of the batch; the sums are combined after the last batch.
      const { first, count } = shardRange(batch.y.length, distributed.rank, distributed.size);
      if (count === 0) continue;
      const plane = batch.x.length / batch.y.length;
      batch = {
        ...batch,
        x: batch.x.subarray(first * plane, (first + count) * plane),
        shape: [count, batch.shape[1], batch.shape[2], batch.shape[3]],
        y: batch.y.subarray(first, first + count),
      };
    }
    const x = input(model, batch);
    const logits = noGrad(() => model.forward(x));
    dropInput(x);
    const n = batch.y.length;
    const loss = noGrad(() => crossEntropy(logits, batch.y));
    const [value, scores] = x.deviceStorage
      ? await Promise.all([loss.itemAsync(), logits.dataAsync()])
      : [loss.item(), logits.data];
    lossSum += value * n;
    const predictions = new Int32Array(n);
    correct += countCorrect(scores, batch.y, logits.shape[1], predictions);
    for (let i = 0; i < n; i++) confusion[batch.y[i]][predictions[i]]++;
    examples += n;
  }
  if (distributed) {
    const sums = await distributed.sum([lossSum, correct, examples, ...confusion.flat()]);
    [lossSum, correct, examples] = sums;
    for (let t = 0; t < numClasses; t++)
      for (let p = 0; p < numClasses; p++) confusion[t][p] = sums[3 + t * numClasses + p];
  }
  return { ...epochMetrics(lossSum, correct, examples, start), confusion };
}
