// The HTTP thread's handle on the worker thread that runs the model (worker.ts): start it, run batches
// through it, stop it. Inputs go to the worker without a copy (their buffers are transferred).
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
  runtime?: { backend?: BackendName; threads?: number; precision?: Precision };
}

/**
 * Kernel threads for serving when neither --threads nor $VGG_NUM_THREADS says: all cores but one, which
 * the HTTP thread needs to read, decode and answer requests while a batch runs. (On 2 cores, 1 kernel
 * thread served 1.8-3.0x the requests/s of 2 in paired runs at 64 clients, 32x32: the pool's threads wait for each other at
 * every kernel's barrier, and one preempted by the HTTP thread stalls them all.)
 */
export function servingThreads(threads?: number): number | undefined {
  if (threads !== undefined || process.env.VGG_NUM_THREADS) return threads;
  return Math.max(1, availableParallelism() - 1);
}

export type ToModelThread = { op: "infer"; id: number; input: Float32Array; n: number };
export type FromModelThread =
  | { op: "ready"; config: VggConfig }
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
        if (m.op === "ready") resolve(new ModelThread(worker, m.config, source.resize));
        else fail(new Error(m.op === "failed" ? m.message : `unexpected first message ${m.op}`));
      });
    });
  }

  /** False once the worker died; every later run fails with the reason. */
  get alive(): boolean {
    return this.failure === null;
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
