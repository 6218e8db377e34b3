// `vgg train --dashboard`: the training thread's side of the live dashboard. It turns the run's records
// into events and posts them to the server in a worker thread (dashboard-worker.ts). Per batch it costs a
// clock read; progress is posted at most every PROGRESS_INTERVAL_MS, and the picture grid (16 forward
// passes) once per epoch.
import { Worker } from "node:worker_threads";
import { FASHION_MNIST_CLASSES } from "../data/fashion-mnist.js";
import { summarize } from "../models/summary.js";
import type { BatchReport, TrainCallback, TrainRunInfo } from "../train/events.js";
import type { FromWorker, ToWorker } from "./dashboard-worker.js";
import { predictSamples, sampleIndices } from "./samples.js";
import type { DashboardEvent } from "./sse.js";

export const PROGRESS_INTERVAL_MS = 250;
export const SAMPLE_COUNT = 16;

export interface ProgressEvent {
  epoch: number;
  epochs: number;
  batch: number;
  batches: number;
  examplesPerSec: number;
  elapsedSeconds: number;
  /** Remaining wall time at the pace so far (evaluation included once an epoch has finished). */
  etaSeconds: number | null;
}

/** The `config` event: what the page shows in its configuration and model panels. */
export function configEvent(run: Omit<TrainRunInfo, "testSet" | "history">): DashboardEvent {
  const cfg = run.model.config;
  return {
    event: "config",
    data: {
      options: run.options,
      modelConfig: cfg,
      summary: summarize(run.model, [1, cfg.inChannels, cfg.inputSize, cfg.inputSize]),
      device: run.device,
      trainSize: run.trainSize,
      testSize: run.testSize,
      stepsPerEpoch: run.stepsPerEpoch,
      startEpoch: run.startEpoch,
      epochs: run.epochs,
    },
  };
}

export class TrainDashboard implements TrainCallback {
  private run?: TrainRunInfo;
  private indices: Int32Array = new Int32Array(0);
  private lastPost = 0;
  private started = 0;
  private batchesDone = 0;
  private closed = false;

  private constructor(
    private readonly worker: Worker,
    readonly url: string,
  ) {}

  static async start(o: { host: string; port: number; assets?: string }): Promise<TrainDashboard> {
    const worker = new Worker(new URL("./dashboard-worker.js", import.meta.url), { workerData: o });
    const url = await new Promise<string>((ok, fail) => {
      worker.once("message", (m: FromWorker) =>
        m.op === "ready" ? ok(m.url) : fail(new Error(m.op === "error" ? m.message : "dashboard failed")),
      );
      worker.once("error", fail);
    });
    worker.on("error", (e) => console.error(`dashboard: ${e.message}`));
    return new TrainDashboard(worker, url);
  }

  private post(event: DashboardEvent, mode: "append" | "latest" = "append"): void {
    if (!this.closed) this.worker.postMessage({ op: "publish", event, mode } satisfies ToWorker);
  }

  trainBegin(run: TrainRunInfo): void {
    this.run = run;
    this.indices = sampleIndices(run.testSize, SAMPLE_COUNT);
    this.post(configEvent(run));
    for (const record of run.history) this.post({ event: "record", data: record });
    this.started = performance.now();
  }

  batchEnd(r: BatchReport): void {
    this.batchesDone++;
    const now = performance.now();
    if (now - this.lastPost < PROGRESS_INTERVAL_MS && r.batch + 1 < r.batches) return;
    this.lastPost = now;
    const run = this.run;
    if (!run) return;
    const elapsed = (now - this.started) / 1000;
    const remaining = (run.epochs - r.epoch) * r.batches - (r.batch + 1);
    const progress: ProgressEvent = {
      epoch: r.epoch,
      epochs: run.epochs,
      batch: r.batch,
      batches: r.batches,
      examplesPerSec: r.examplesPerSec,
      elapsedSeconds: elapsed,
      etaSeconds: (remaining * elapsed) / this.batchesDone,
    };
    this.post({ event: "progress", data: progress }, "latest");
  }

  record(record: Record<string, unknown>): void {
    this.post({ event: "record", data: record });
    const run = this.run;
    if (record.type !== "epoch" || !run || this.indices.length === 0) return;
    const grid = predictSamples(
      run.model,
      run.testSet,
      this.indices,
      record.epoch as number,
      FASHION_MNIST_CLASSES,
    );
    this.post({ event: "samples", data: grid }, "latest");
  }

  /** Tells the pages how the run ended, then stops the server (waiting at most a second for it). */
  async close(status: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const done = new Promise<void>((ok) => {
      this.worker.on("message", (m: FromWorker) => m.op === "closed" && ok());
      this.worker.once("exit", () => ok());
    });
    this.worker.postMessage({ op: "close", event: { event: "end", data: { status } } } satisfies ToWorker);
    await Promise.race([done, new Promise((r) => setTimeout(r, 1000).unref())]);
    await this.worker.terminate();
  }
}
