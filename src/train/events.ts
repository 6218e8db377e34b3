// What a training run tells the code that watches it (the command line's progress bar and log, the live
// dashboard, a library user's callbacks): Keras-style callbacks, called on the training thread between
// batches, so each must be quick.
import type { FashionMnist } from "../data/fashion-mnist.js";
import type { VggModel } from "../models/vgg.js";
import type { BatchReport } from "./trainer.js";

export type { BatchReport } from "./trainer.js";

/** What a run says when it starts. */
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

/** One finished epoch: its training metrics and the test set's. */
export interface EpochSummary {
  epoch: number;
  epochs: number;
  trainLoss: number;
  trainAcc: number;
  testLoss: number;
  testAcc: number;
  examplesPerSec: number;
  seconds: number;
  lr: number;
}

/** Every method is optional; `fit` calls them in the order listed. */
export interface TrainCallback {
  trainBegin?(run: TrainRunInfo): void;
  epochBegin?(epoch: number, stepsPerEpoch: number): void;
  batchEnd?(report: BatchReport): void;
  /** Each record as it is added to metrics.jsonl (batch points and epochs). */
  record?(record: Record<string, unknown>): void;
  /** After the epoch's evaluation and checkpoint. */
  epochEnd?(summary: EpochSummary): void;
  /** Also when the epoch was cut short (an abort); `stopped` says so. */
  epochStopped?(epoch: number): void;
}
