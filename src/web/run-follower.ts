// `vgg dashboard DIR`: follows a run folder, finished or still training, and feeds the same events the
// live dashboard sends. metrics.jsonl is appended a line at a time and atomically rewritten after each
// epoch, so it is re-read whenever its size or time changes; the lines already sent are kept only if the
// file still begins with them (otherwise it is a new run and the pages start over).
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { FASHION_MNIST_CLASSES, type FashionMnist, loadFashionMnist } from "../data/fashion-mnist.js";
import { loadModel, readCheckpoint } from "../train/checkpoint.js";
import { predictSamples, sampleIndices } from "./samples.js";
import type { SseHub } from "./sse.js";
import { configEvent, SAMPLE_COUNT } from "./train-dashboard.js";

export const POLL_MS = 250;

function stamp(path: string): string | null {
  try {
    const s = statSync(path);
    return `${s.size}:${s.mtimeMs}`;
  } catch {
    return null;
  }
}

export class RunFollower {
  private lines: string[] = [];
  private metricsStamp: string | null = null;
  private modelStamp: string | null = null;
  private timer: NodeJS.Timeout;
  private testSet: FashionMnist | null | undefined;
  private options: Record<string, unknown> = {};

  constructor(
    private readonly dir: string,
    private readonly hub: SseHub,
    private readonly data: { dataDir?: string } = {},
  ) {
    if (!existsSync(join(dir, "metrics.jsonl")) && !existsSync(join(dir, "checkpoint.safetensors")))
      throw new Error(
        `Expected a training run folder with metrics.jsonl but ${dir} has none; pass the --out folder of \`vgg train\``,
      );
    this.timer = setInterval(
      () => void this.poll().catch((e) => console.error(`dashboard: ${e.message}`)),
      POLL_MS,
    );
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private busy = false;

  /** Reads whatever changed since the last call and publishes it (a call during another is skipped). */
  async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.update();
    } finally {
      this.busy = false;
    }
  }

  private async update(): Promise<void> {
    const metricsPath = join(this.dir, "metrics.jsonl");
    const ms = stamp(metricsPath);
    if (ms !== null && ms !== this.metricsStamp) {
      this.metricsStamp = ms;
      const text = readFileSync(metricsPath, "utf8");
      // A line without its newline is still being written.
      const lines = text
        .split("\n")
        .slice(0, -1)
        .filter((l) => l.trim() !== "");
      const continues = this.lines.every((l, i) => lines[i] === l);
      if (!continues) {
        this.hub.reset();
        this.lines = [];
        this.modelStamp = null;
      }
      for (const line of lines.slice(this.lines.length)) {
        try {
          this.hub.publish({ event: "record", data: JSON.parse(line) });
        } catch {
          // A malformed line is skipped, not fatal: the file is the run's, not ours.
        }
      }
      this.lines = lines;
      this.publishProgress();
    }
    const modelPath = join(this.dir, "model.safetensors");
    const mst = stamp(modelPath);
    if (mst !== null && mst !== this.modelStamp) {
      this.modelStamp = mst;
      await this.publishModel(modelPath);
    }
  }

  private records(): Record<string, unknown>[] {
    return this.lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  }

  private publishProgress(): void {
    const epochs = this.records().filter((r) => r.type === "epoch");
    const last = epochs.at(-1);
    if (!last) return;
    const total = typeof this.options.epochs === "number" ? this.options.epochs : null;
    const meanSeconds = epochs.reduce((s, r) => s + Number(r.seconds ?? 0), 0) / epochs.length;
    const done = last.epoch as number;
    this.hub.publish(
      {
        event: "progress",
        data: {
          epoch: done,
          epochs: total ?? done,
          batch: null,
          batches: null,
          examplesPerSec: last.examplesPerSec,
          elapsedSeconds: epochs.reduce((s, r) => s + Number(r.seconds ?? 0), 0),
          etaSeconds: total === null ? null : Math.max(0, total - done) * meanSeconds,
        },
      },
      "latest",
    );
  }

  private async publishModel(modelPath: string): Promise<void> {
    let loaded: ReturnType<typeof loadModel>;
    try {
      loaded = loadModel(modelPath, null);
    } catch {
      return; // replaced mid-read or not ours; the next change retries
    }
    const checkpointPath = join(this.dir, "checkpoint.safetensors");
    if (existsSync(checkpointPath)) {
      try {
        this.options = readCheckpoint(checkpointPath).state.options;
      } catch {
        // keep the previous options
      }
    }
    const { model } = loaded;
    const epochs = typeof this.options.epochs === "number" ? this.options.epochs : 0;
    this.hub.publish(
      configEvent({
        options: this.options,
        model,
        trainSize: Number(this.options.limitTrain ?? 60000),
        testSize: Number(this.options.limitTest ?? 10000),
        stepsPerEpoch: 0,
        startEpoch: 0,
        epochs,
        device: "recorded run",
      }),
      "latest",
    );
    this.publishProgress();
    if (this.testSet === undefined) {
      try {
        this.testSet = await loadFashionMnist({ split: "test", dataDir: this.data.dataDir, download: false });
      } catch (e) {
        this.testSet = null;
        console.error(`dashboard: no picture grid, the test set is unavailable: ${(e as Error).message}`);
      }
    }
    if (!this.testSet || model.config.inChannels !== 1) return;
    const limit = Math.min(this.testSet.count, Number(this.options.limitTest ?? this.testSet.count));
    const epoch = Number(loaded.metadata.epoch ?? 0);
    this.hub.publish(
      {
        event: "samples",
        data: predictSamples(
          model,
          this.testSet,
          sampleIndices(limit, SAMPLE_COUNT),
          epoch,
          FASHION_MNIST_CLASSES,
        ),
      },
      "latest",
    );
  }
}
