// DataLoader: seeded shuffling, batching (the last partial batch included) and per-batch preparation, by
// default in a worker thread a few batches ahead of the consumer. Resizing happens per batch, so a dataset
// resized to 224x224 (12 GB of floats for 60,000 images) is never materialised.

import { Worker } from "node:worker_threads";
import { Generator } from "../rng.js";
import { type BatchConfig, BatchPreparer, mixSeed, type PreparedBatch } from "./batch.js";
import type { WorkerRequest, WorkerResponse } from "./loader-worker.js";
import { type AugmentOptions, checkAugment, checkNormalization, DEFAULT_AUGMENT } from "./transforms.js";

/** An image classification set: uint8 images (count, rows, cols) and their labels. */
export interface Dataset {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  rows: number;
  cols: number;
}

export interface DataLoaderOptions {
  batchSize: number;
  /** A new permutation every epoch, a function of (seed, epoch) only (default: false, file order). */
  shuffle?: boolean;
  seed?: number;
  /** Output size: N for N x N, or [height, width] (default: the images' own size). */
  resize?: number | readonly [number, number];
  normalize?: { mean: number; std: number };
  /** true for DEFAULT_AUGMENT (padding 2, flip), or the options; seeded by (seed, epoch, batch). */
  augment?: boolean | Partial<AugmentOptions>;
  /** Use only the first `limit` examples, in file order. */
  limit?: number;
  /** 1 (default): prepare batches in a worker thread; 0: synchronously on the calling thread. */
  workers?: 0 | 1;
  /** Batches requested ahead of the consumer on the worker path (default 2). */
  prefetch?: number;
}

export interface Batch {
  x: Float32Array; // (n, 1, H, W)
  shape: [number, number, number, number];
  y: Int32Array; // (n)
  /** Dataset indices of the examples, in batch order. */
  indices: Int32Array;
  epoch: number;
  /** Position of the batch in its epoch. */
  index: number;
}

type Prepared = PreparedBatch & { indices: Int32Array<ArrayBuffer> };

// Tags keep the shuffling and augmentation streams apart.
const SHUFFLE_TAG = 0x5348;
const AUGMENT_TAG = 0x4147;

function checkPositiveInteger(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`Expected ${what} to be a positive integer but received ${value}`);
  }
}

function checkDataset(dataset: Dataset): void {
  const { images, labels, count, rows, cols } = dataset;
  if (images.length !== count * rows * cols) {
    throw new RangeError(
      `Expected ${count} x ${rows} x ${cols} = ${count * rows * cols} image bytes but received ${images.length}`,
    );
  }
  if (labels.length !== count) throw new RangeError(`Expected ${count} labels but received ${labels.length}`);
}

export class DataLoader implements AsyncIterable<Batch> {
  /** Number of batches per epoch. */
  readonly length: number;
  /** Number of examples used (after `limit`). */
  readonly size: number;
  /** The epoch the next `for await` iterates; it advances after each iteration starts. */
  epoch = 0;
  private readonly config: BatchConfig;
  private readonly images: Uint8Array;
  private readonly labels: Uint8Array;
  private preparer?: BatchPreparer;
  private worker?: Worker;
  private readonly pending = new Map<
    number,
    { resolve: (b: Prepared) => void; reject: (e: Error) => void }
  >();
  private nextId = 0;

  constructor(
    dataset: Dataset,
    private readonly options: DataLoaderOptions,
  ) {
    checkDataset(dataset);
    checkPositiveInteger("batchSize", options.batchSize);
    const limit = options.limit ?? dataset.count;
    if (!Number.isInteger(limit) || limit < 0) {
      throw new RangeError(`Expected limit to be an integer >= 0 but received ${limit}`);
    }
    if (options.prefetch !== undefined) checkPositiveInteger("prefetch", options.prefetch);
    if (options.workers !== undefined && options.workers !== 0 && options.workers !== 1) {
      throw new RangeError(`Expected workers to be 0 or 1 but received ${options.workers}`);
    }
    const [outH, outW] =
      options.resize === undefined
        ? [dataset.rows, dataset.cols]
        : typeof options.resize === "number"
          ? [options.resize, options.resize]
          : options.resize;
    checkPositiveInteger("the resize height", outH);
    checkPositiveInteger("the resize width", outW);
    if (options.normalize) checkNormalization(options.normalize.mean, options.normalize.std);
    const augment =
      options.augment === true
        ? DEFAULT_AUGMENT
        : options.augment
          ? { ...DEFAULT_AUGMENT, ...options.augment }
          : undefined;
    if (augment) checkAugment(augment);
    this.size = Math.min(limit, dataset.count);
    this.length = Math.ceil(this.size / options.batchSize);
    const plane = dataset.rows * dataset.cols;
    this.images = dataset.images.subarray(0, this.size * plane);
    this.labels = dataset.labels.subarray(0, this.size);
    this.config = {
      rows: dataset.rows,
      cols: dataset.cols,
      outH,
      outW,
      normalize: options.normalize,
      augment,
    };
  }

  /** Shape of a full batch: [batchSize, 1, H, W]. */
  get batchShape(): [number, number, number, number] {
    return [this.options.batchSize, 1, this.config.outH, this.config.outW];
  }

  /** The example order of an epoch: file order, or a permutation determined by (seed, epoch). */
  order(epoch: number): Int32Array {
    if (!this.options.shuffle) return Int32Array.from({ length: this.size }, (_, i) => i);
    return new Generator(mixSeed(this.options.seed ?? 0, epoch, SHUFFLE_TAG)).permutation(this.size);
  }

  /** Sets the epoch the next `for await` iterates (for resuming at epoch k). */
  setEpoch(epoch: number): void {
    if (!Number.isInteger(epoch) || epoch < 0) {
      throw new RangeError(`Expected an epoch >= 0 but received ${epoch}`);
    }
    this.epoch = epoch;
  }

  [Symbol.asyncIterator](): AsyncIterator<Batch> {
    return this.batches(this.epoch++);
  }

  /** The batches of one epoch, independent of any other epoch iterated before. */
  async *batches(epoch: number): AsyncGenerator<Batch> {
    const order = this.order(epoch);
    const bs = this.options.batchSize;
    const indicesOf = (i: number) => order.slice(i * bs, Math.min((i + 1) * bs, this.size));
    const seedOf = (i: number) => mixSeed(this.options.seed ?? 0, epoch, i, AUGMENT_TAG);
    const shape = (n: number): Batch["shape"] => [n, 1, this.config.outH, this.config.outW];
    if (this.options.workers === 0) {
      this.preparer ??= new BatchPreparer(this.images, this.labels, this.config);
      for (let i = 0; i < this.length; i++) {
        const indices = indicesOf(i);
        const { x, y } = this.preparer.prepare(indices, seedOf(i));
        yield { x, shape: shape(indices.length), y, indices, epoch, index: i };
      }
      return;
    }
    const ahead: Promise<Prepared>[] = [];
    let submitted = 0;
    const submit = () => {
      if (submitted >= this.length) return;
      const promise = this.request(indicesOf(submitted), seedOf(submitted));
      promise.catch(() => {}); // reported when awaited; a consumer that stops early never awaits it
      ahead.push(promise);
      submitted++;
    };
    for (let k = 0; k < (this.options.prefetch ?? 2); k++) submit();
    for (let i = 0; i < this.length; i++) {
      const next = ahead.shift()!;
      submit();
      const { x, y, indices } = await next;
      yield { x, shape: shape(indices.length), y, indices, epoch, index: i };
    }
  }

  /** Stops the worker thread; the loader restarts one if iterated again. */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    for (const entry of this.pending.values()) entry.reject(new Error("DataLoader was closed"));
    this.pending.clear();
    if (worker) await worker.terminate();
  }

  private startWorker(): Worker {
    const worker = new Worker(new URL("./loader-worker.js", import.meta.url));
    const images = this.images.slice();
    const labels = this.labels.slice();
    const init: WorkerRequest = { type: "init", images, labels, config: this.config };
    worker.postMessage(init, [images.buffer, labels.buffer]);
    worker.on("message", (message: WorkerResponse) => {
      const entry = this.pending.get(message.id);
      if (entry === undefined) return;
      this.pending.delete(message.id);
      if (this.pending.size === 0) worker.unref();
      if (message.type === "error") entry.reject(new Error(`DataLoader worker: ${message.message}`));
      else entry.resolve({ x: message.x, y: message.y, indices: message.indices });
    });
    const failAll = (error: Error) => {
      if (this.worker !== worker) return; // closed on purpose
      this.worker = undefined;
      for (const entry of this.pending.values()) entry.reject(error);
      this.pending.clear();
    };
    worker.on("error", (err) => failAll(new Error(`DataLoader worker failed: ${err.message}`)));
    worker.on("exit", (code) =>
      failAll(new Error(`DataLoader worker exited (code ${code}) before finishing`)),
    );
    worker.unref();
    return worker;
  }

  private request(indices: Int32Array<ArrayBuffer>, seed: number): Promise<Prepared> {
    this.worker ??= this.startWorker();
    const worker = this.worker;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref(); // keep the process alive while a batch is owed
      const message: WorkerRequest = { type: "batch", id, indices, seed };
      worker.postMessage(message, [indices.buffer]);
    });
  }
}
