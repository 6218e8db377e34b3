// The HTTP thread's handle on the worker threads that run the model (worker.ts): start them, run batches
// through them, stop them. Each model thread holds its own copy of the model and runs whole batches; inputs
// go to a worker without a copy (their buffers are transferred).
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { BackendName, Precision } from "../backend/index.js";
import type { ConvArch, VggConfig, VggOptions } from "../models/vgg.js";

/**
 * What loadModel needs (the weights file, and the model flags for a file without vgg-ts metadata), the
 * images' side (--resize) and the kernels' backend and thread count.
 */
export interface ModelSource {
  weights: string;
  fallback: { convArch: ConvArch; options: VggOptions } | null;
  resize?: number;
  /** threads: kernel threads (the native pool is shared by every model thread of the process). */
  runtime?: { backend?: BackendName; threads?: number; precision?: Precision };
}

/**
 * Model threads and kernel threads for serving. By default (on 2 cores or more) two model threads, each
 * with its own copy of the weights, and a kernel pool of every core: a batch that is the server's only work
 * runs its kernels on the pool, so at low load it takes every core; while the cores are shared (two batches,
 * or one and requests waiting for the HTTP thread) the server marks the pool busy (markCoresBusy) and each
 * batch runs its kernels on its own model thread, a core each, instead of three busy threads on two cores
 * whose kernels wait for a preempted one (native/threadpool.h). On the 2-core Zen 4 EPYC, 64 clients at
 * 32x32, two model threads sharing the pool gave 72-90% (median 85%) of the offline batch-32 rate against
 * 69-75% (median 73%) for one model thread, in four paired rounds; the busy mark added 1.095x on the Zen 5
 * EPYC (24 paired rounds). --workers n starts n model threads on 1 kernel thread each unless --threads says
 * otherwise.
 */
export function servingLayout(workers?: number, threads?: number): { workers: number; threads: number } {
  const kernelThreads = threads ?? (Number(process.env.VGG_NUM_THREADS) || undefined);
  if (workers !== undefined) return { workers, threads: kernelThreads ?? 1 };
  const cores = availableParallelism();
  return { workers: cores >= 2 ? 2 : 1, threads: kernelThreads ?? cores };
}

export type ToModelThread = { op: "infer"; id: number; input: Float32Array; n: number };
export type FromModelThread =
  | { op: "ready"; config: VggConfig; backend: BackendName }
  | { op: "failed"; message: string }
  | { op: "done"; id: number; logits: Float32Array }
  | { op: "error"; id: number; message: string };

export class ModelThread {
  private nextId = 0;
  private readonly pending = new Map<number, { ok: (x: Float32Array) => void; fail: (e: Error) => void }>();
  private failure: Error | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly config: VggConfig,
    readonly backend: BackendName,
    readonly resize: number | undefined,
  ) {
    worker.on("message", (m: FromModelThread) => {
      if (m.op !== "done" && m.op !== "error") return;
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.op === "done") p?.ok(m.logits);
      else p?.fail(new Error(m.message));
    });
    const die = (e: Error) => {
      this.failure ??= e;
      for (const p of this.pending.values()) p.fail(e);
      this.pending.clear();
    };
    worker.on("error", die);
    worker.on("exit", (code) => die(new Error(`the model thread exited (code ${code})`)));
  }

  /** Loads the model in a new worker thread; rejects with the loader's message (a bad file, wrong flags). */
  static start(source: ModelSource): Promise<ModelThread> {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: source });
    return new Promise((resolve, reject) => {
      const fail = (e: Error) => {
        worker.terminate();
        reject(e);
      };
      worker.once("error", fail);
      worker.once("message", (m: FromModelThread) => {
        worker.off("error", fail);
        if (m.op === "ready") resolve(new ModelThread(worker, m.config, m.backend, source.resize));
        else fail(new Error(m.op === "failed" ? m.message : `unexpected first message ${m.op}`));
      });
    });
  }

  /** False once the worker died; every later run fails with the reason. */
  get alive(): boolean {
    return this.failure === null;
  }

  /** Batches sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Logits (n, numClasses) for n inputs (n, C, H, W); the input's buffer moves to the worker. */
  run(input: Float32Array, n: number): Promise<Float32Array> {
    if (this.failure) return Promise.reject(this.failure);
    // Transfer moves the whole buffer, so a view into a larger one is copied first.
    const owned =
      input.byteOffset === 0 && input.byteLength === input.buffer.byteLength ? input : input.slice();
    const id = this.nextId++;
    return new Promise((ok, fail) => {
      this.pending.set(id, { ok, fail });
      const m: ToModelThread = { op: "infer", id, input: owned, n };
      this.worker.postMessage(m, [owned.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.failure ??= new Error("the model thread was stopped");
    await this.worker.terminate();
  }
}

/** Several model threads, each with its own copy of the model; a batch goes to the least busy live one. */
export class ModelThreads {
  private constructor(
    private readonly threads: ModelThread[],
    readonly config: VggConfig,
    /** The kernels' backend (every model thread configures the same). */
    readonly backend: BackendName,
    readonly resize: number | undefined,
  ) {}

  /** Starts `count` model threads (all or none: a failure stops the others). */
  static async start(source: ModelSource, count: number): Promise<ModelThreads> {
    if (!Number.isInteger(count) || count < 1)
      throw new RangeError(`Expected a positive whole number of model threads but received ${count}`);
    const started = await Promise.allSettled(Array.from({ length: count }, () => ModelThread.start(source)));
    const threads = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = started.find((r) => r.status === "rejected");
    if (failed) {
      await Promise.all(threads.map((t) => t.close()));
      throw failed.reason;
    }
    return new ModelThreads(threads, threads[0].config, threads[0].backend, source.resize);
  }

  get count(): number {
    return this.threads.length;
  }

  /** False once any model thread died (the server then reports itself not ready). */
  get alive(): boolean {
    return this.threads.every((t) => t.alive);
  }

  /** Logits (n, numClasses) for n inputs (n, C, H, W), from the live model thread with the fewest batches. */
  run(input: Float32Array, n: number): Promise<Float32Array> {
    let best: ModelThread | undefined;
    for (const t of this.threads) if (t.alive && (!best || t.inFlight < best.inFlight)) best = t;
    return (best ?? this.threads[0]).run(input, n);
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.close()));
  }
}
