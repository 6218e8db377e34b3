// What the HTTP routes need of the model: its name and shapes, class names, and batched inference
// (a request's images join others' in the batcher, which hands batches to the model threads).
import type { VggConfig } from "../models/vgg.js";
import { Batcher, type BatcherOptions, type ClientTie } from "./batcher.js";
import { classNames, inputShape } from "./classify.js";
import type { ModelThreads } from "./model-thread.js";

export interface ServiceOptions {
  /** The name clients use in /v2/models/{name}. */
  modelName: string;
  maxBatch: number;
  maxDelayMs: number;
  maxQueue: number;
  /** Per request, from arrival to answer; 0: none. */
  requestTimeoutMs: number;
  onBatch?: BatcherOptions["onBatch"];
  senders?: BatcherOptions["senders"];
  onShared?: BatcherOptions["onShared"];
}

export class ModelService {
  readonly config: VggConfig;
  readonly shape: [number, number, number];
  readonly names: readonly string[] | null;
  readonly batcher: Batcher;
  private stopping = false;

  constructor(
    private readonly thread: ModelThreads,
    readonly o: ServiceOptions,
  ) {
    this.config = thread.config;
    this.shape = inputShape(this.config, thread.resize);
    this.names = classNames(this.config);
    this.batcher = new Batcher({
      maxBatch: o.maxBatch,
      maxDelayMs: o.maxDelayMs,
      maxQueue: o.maxQueue,
      inputSize: this.imageSize,
      outputSize: this.config.numClasses,
      concurrency: thread.count,
      run: (x, n) => thread.run(x, n),
      onBatch: o.onBatch,
      senders: o.senders,
      onShared: o.onShared,
    });
  }

  /** The images' side asked for with --resize, if any (see classify.ts imageSide). */
  get resize(): number | undefined {
    return this.thread.resize;
  }

  get name(): string {
    return this.o.modelName;
  }

  /** The most images one request may carry: a batch, and no more than the queue holds. */
  get maxImagesPerRequest(): number {
    return Math.min(this.o.maxBatch, this.o.maxQueue);
  }

  /** Floats in one image's input, C * H * W. */
  get imageSize(): number {
    return this.shape[0] * this.shape[1] * this.shape[2];
  }

  /** Ready while the model threads live and the server is not shutting down. */
  get ready(): boolean {
    return this.thread.alive && !this.stopping;
  }

  /** Logits (n, numClasses) for n images; rejects with the batcher's QueueFullError, RequestTimeoutError, ... */
  infer(input: Float32Array, n: number, tie?: ClientTie): Promise<Float32Array> {
    return this.batcher.submit(input, n, this.o.requestTimeoutMs, tie);
  }

  /** Answers what is queued, then stops the model threads. */
  async close(): Promise<void> {
    this.stopping = true;
    await this.batcher.close();
    await this.thread.close();
  }
}
