// Data-parallel training over MPI (as PyTorch's DistributedDataParallel): every rank holds the whole model,
// takes its own rows of every global batch, and the gradients are summed over the ranks with an in-place
// MPI all-reduce before every rank applies the same SGD step.
//
// The global batch of n rows is split into contiguous shards, rank r taking rows
// [ceil(r n / N), ceil((r + 1) n / N)). Rank r back-propagates its shard's mean loss with the seed
// n_r / n, so the sum over ranks is the gradient of the global batch's mean loss. Every rank loads the
// whole global batch (the same seeded shuffle and augmentation) and draws the dropout masks of all n rows,
// keeping its own (setDropoutBatchShard), so the random streams advance identically everywhere and N
// processes compute what one process computes for the same global batch, up to the rounding of the
// different summation order.
import { backward } from "../autograd.js";
import type { Batch } from "../data/loader.js";
import type { Module } from "../nn/module.js";
import { setDropoutBatchShard } from "../ops/activation.js";
import { crossEntropy } from "../ops/loss.js";
import type { SGD } from "../optim/sgd.js";
import { type Parameter, Tensor } from "../tensor.js";
import { type MpiAddon, requireMpiAddon, type WorldInfo } from "./mpi.js";

/** A collective failed or timed out: the job cannot continue (the message says why). */
export class DistributedError extends Error {}

export interface DataParallelOptions {
  /** Seconds a rank waits in one collective before giving up on the others (default 300). */
  timeoutSeconds?: number;
  /** Gradients are summed in buckets of about this many bytes (default 25 MB, as PyTorch DDP). */
  bucketBytes?: number;
  /** Microseconds the communication thread sleeps between polls of a pending collective (default 50). */
  pollMicroseconds?: number;
  /**
   * Start each bucket's all-reduce during backward, as soon as its gradients are final (default true);
   * false waits for the whole backward pass (for measuring what the overlap saves).
   */
  overlap?: boolean;
}

/** Rows [first, first + count) of a global batch of n rows that `rank` of `size` takes. */
export function shardRange(n: number, rank: number, size: number): { first: number; count: number } {
  const first = Math.ceil((rank * n) / size);
  return { first, count: Math.ceil(((rank + 1) * n) / size) - first };
}

/** This rank's part of a batch: its rows, and the weight n_r / n of its mean loss in the global mean. */
export interface Shard {
  x: Float32Array;
  shape: [number, number, number, number];
  y: Int32Array;
  /** n_r / n; 0 for a rank whose shard of a short last batch is empty (it runs row 0 with no weight). */
  weight: number;
  /** Examples this rank contributes to the metrics (0 for an empty shard). */
  examples: number;
}

interface Bucket {
  params: Parameter[];
  ready: number;
  pending?: Promise<number>;
}

export class DataParallel {
  readonly rank: number;
  readonly size: number;
  readonly host: string;
  readonly library: string;
  private buckets: Bucket[] = [];
  private bucketOf = new Map<Parameter, number>();
  private nextBucket = 0;
  private phase: "starting" | "training" | "refused" = "starting";
  /** Seconds backward() waited for the gradient all-reduces after its own pass (the exposed part). */
  commSeconds = 0;
  /** Seconds the communication thread spent in the gradient all-reduces (overlapped or not). */
  commThreadSeconds = 0;
  /** backward() calls counted in the two figures above. */
  commCalls = 0;

  private constructor(
    private readonly mpi: MpiAddon,
    info: WorldInfo,
    private readonly bucketBytes: number,
    private readonly overlap: boolean,
  ) {
    this.rank = info.rank;
    this.size = info.size;
    this.host = info.host;
    this.library = info.library;
  }

  /** Initialises MPI (throws how to install Open MPI when the addon is missing). */
  static start(options: DataParallelOptions = {}): DataParallel {
    const mpi = requireMpiAddon();
    const timeoutSeconds = options.timeoutSeconds ?? 300;
    if (!(timeoutSeconds > 0))
      throw new RangeError(`Expected an MPI timeout > 0 seconds but received ${timeoutSeconds}`);
    const info = mpi.init({ timeoutSeconds, pollMicroseconds: options.pollMicroseconds ?? 50 });
    return new DataParallel(mpi, info, options.bucketBytes ?? 25e6, options.overlap ?? true);
  }

  get isRoot(): boolean {
    return this.rank === 0;
  }

  /** "rank 1 of 2 on host". */
  describe(): string {
    return `rank ${this.rank} of ${this.size} on ${this.host}`;
  }

  /** This rank's rows of a global batch; also sets the dropout shard for the forward pass that follows. */
  shard(batch: Batch): Shard {
    const n = batch.y.length;
    const { first, count } = shardRange(n, this.rank, this.size);
    // An empty shard (a last batch shorter than N) still runs one row, weighted 0, so that every rank
    // makes the same collective calls and draws the same random numbers.
    const rows = count > 0 ? { first, count } : { first: 0, count: 1 };
    const plane = batch.x.length / n;
    setDropoutBatchShard({ first: rows.first, count: rows.count, total: n });
    return {
      x: batch.x.subarray(rows.first * plane, (rows.first + rows.count) * plane),
      shape: [rows.count, batch.shape[1], batch.shape[2], batch.shape[3]],
      y: batch.y.subarray(rows.first, rows.first + rows.count),
      weight: count / n,
      examples: count,
    };
  }

  /** Ends the shard set by shard() (evaluation and anything else see whole batches again). */
  endShard(): void {
    setDropoutBatchShard(null);
  }

  /**
   * Every rank calls this once, at the point where training would start, with the error that stopped it
   * there (or null). Throws on every rank if any rank failed, naming the ranks and their messages, so bad
   * arguments or a missing file on one machine stop the whole job before any training.
   */
  async agree(error: Error | null): Promise<void> {
    if (this.phase !== "starting")
      throw new Error("DataParallel.agree may be called only once, before training");
    this.phase = "training";
    const messages = await this.collective(this.mpi.allgather(error ? error.message || String(error) : ""));
    const failed = messages.map((m, r) => ({ m, r })).filter(({ m }) => m !== "");
    if (failed.length === 0) return;
    this.phase = "refused";
    if (error) throw error;
    throw new Error(
      `the job cannot start: ${failed.map(({ m, r }) => `rank ${r} failed: ${m.split("\n")[0]}`).join("; ")}`,
    );
  }

  /** Where fit's caller calls agree with the error that stopped setup, unless training had started. */
  async failedBeforeStart(error: Error): Promise<void> {
    if (this.phase === "starting") await this.agree(error).catch(() => {});
  }

  /**
   * starting: before agree(); training: every rank agreed; refused: some rank failed to start and every
   * rank knows (they are still in step, so MPI can be finalised normally).
   */
  get state(): "starting" | "training" | "refused" {
    return this.phase;
  }

  /** Rank 0's weights and buffers (batch-norm statistics) to every rank. */
  async broadcastModel(model: Module): Promise<void> {
    const tensors = [...model.stateDict().values()].map((t) => t.data);
    await this.collective(this.mpi.broadcast(tensors, 0));
    for (const p of model.parameters()) p.markModified();
  }

  /**
   * Rank 0's buffers (batch-norm running statistics) to every rank. Batch norm normalises each shard by
   * its own statistics (PyTorch DDP without SyncBatchNorm); the running averages then differ per rank,
   * so rank 0's are used, as DDP's broadcast_buffers does, before evaluation and checkpoints.
   */
  async broadcastBuffers(model: Module): Promise<void> {
    const buffers = model.namedBuffers().map(([, t]) => t.data);
    if (buffers.length > 0) await this.collective(this.mpi.broadcast(buffers, 0));
  }

  /** Plans the gradient buckets: parameters in reverse order (the order backward produces them). */
  private plan(params: readonly Parameter[]): void {
    this.buckets = [];
    this.bucketOf.clear();
    let open: Bucket | null = null;
    let openBytes = 0;
    for (let i = params.length - 1; i >= 0; i--) {
      const p = params[i];
      const bytes = p.size * 4;
      // A large gradient is reduced in place on its own; small ones are packed together.
      if (bytes >= this.bucketBytes) {
        this.buckets.push({ params: [p], ready: 0 });
        open = null;
      } else {
        if (!open || openBytes + bytes > this.bucketBytes) {
          open = { params: [], ready: 0 };
          openBytes = 0;
          this.buckets.push(open);
        }
        open.params.push(p);
        openBytes += bytes;
      }
      this.bucketOf.set(p, this.buckets.length - 1);
    }
  }

  private submitReady(): void {
    while (this.nextBucket < this.buckets.length) {
      const b = this.buckets[this.nextBucket];
      if (b.ready < b.params.length) return;
      b.pending = this.mpi.allreduce(
        b.params.map((p) => p.peekGrad()!.data),
        "sum",
      );
      this.nextBucket++;
    }
  }

  /** Called as each parameter's gradient becomes final during backward. */
  private gradReady(p: Parameter): void {
    const b = this.bucketOf.get(p);
    if (b === undefined) return;
    this.buckets[b].ready++;
    this.submitReady();
  }

  /**
   * Back-propagates this rank's loss with the shard's weight and sums the gradients over the ranks.
   * Buckets are handed to the communication thread as soon as all their gradients are final, so the
   * all-reduce of the classifier's large gradients runs while the convolutions' backward still computes.
   */
  async backward(loss: Tensor, weight: number, params: readonly Parameter[]): Promise<void> {
    if (this.bucketOf.size !== params.length || params.some((p) => !this.bucketOf.has(p))) this.plan(params);
    for (const b of this.buckets) {
      b.ready = 0;
      b.pending = undefined;
    }
    this.nextBucket = 0;
    const onLeafGradient = this.overlap ? (t: unknown) => this.gradReady(t as Parameter) : undefined;
    backward(loss, { data: Float32Array.of(weight), shape: [] }, { onLeafGradient });
    if (!this.overlap) for (const p of params) if (p.peekGrad()) this.gradReady(p);
    // Parameters the graph did not reach get a zero gradient, so that every rank sends the same buckets.
    for (const p of params) {
      if (p.peekGrad()) continue;
      p.grad = new Tensor(new Float32Array(p.size), p.shape);
      this.gradReady(p);
    }
    this.submitReady();
    const t0 = performance.now();
    const seconds = await this.collective(Promise.all(this.buckets.map((b) => b.pending!)));
    this.commSeconds += (performance.now() - t0) / 1000;
    this.commThreadSeconds += seconds.reduce((a, b) => a + b, 0);
    this.commCalls++;
  }

  /**
   * One data-parallel step up to (not including) the SGD update: this rank's shard forward and backward,
   * the gradients summed over the ranks, and the batch's metrics summed too. `stop` is this rank's wish
   * to stop after the batch (Ctrl-C); the result's `stop` is true on every rank when any rank asked.
   */
  async trainStep(
    model: Module,
    optimizer: SGD,
    batch: Batch,
    stop: boolean,
    countCorrect: (logits: Float32Array, targets: Int32Array, classes: number) => number,
  ): Promise<{ lossSum: number; correct: number; examples: number; stop: boolean }> {
    const shard = this.shard(batch);
    let logits: Tensor;
    try {
      logits = model.forward(new Tensor(shard.x, shard.shape));
    } finally {
      this.endShard();
    }
    const loss = crossEntropy(logits, shard.y);
    const value = loss.item();
    optimizer.zeroGrad();
    // The metrics go out right behind the gradients; a non-finite loss on one rank is seen by all.
    const local = Float64Array.of(
      shard.examples > 0 ? value * shard.examples : 0,
      shard.examples > 0 ? countCorrect(logits.data, shard.y, logits.shape[1]) : 0,
      shard.examples,
      stop ? 1 : 0,
    );
    await this.backward(loss, shard.weight, optimizer.params);
    await this.collective(this.mpi.allreduce([local], "sum"));
    return { lossSum: local[0], correct: local[1], examples: local[2], stop: local[3] > 0 };
  }

  /** In-place sums over the ranks of float32 buffers; resolves with the seconds it took. */
  allreduce(buffers: readonly Float32Array[]): Promise<number> {
    return this.collective(this.mpi.allreduce(buffers, "sum"));
  }

  /** Every rank's string, by rank (e.g. host names). */
  allgather(text: string): Promise<string[]> {
    return this.collective(this.mpi.allgather(text));
  }

  /** Element-wise sums over the ranks (float64), e.g. [loss sum, correct, examples]. */
  async sum(values: readonly number[]): Promise<number[]> {
    const buf = Float64Array.from(values);
    await this.collective(this.mpi.allreduce([buf], "sum"));
    return Array.from(buf);
  }

  /**
   * Checks that every rank holds the same weights (a digest of every parameter, compared by min and max
   * over the ranks); a difference would mean the ranks stepped differently, which must never happen.
   */
  async checkInSync(model: Module): Promise<void> {
    let digest = 0;
    for (const p of model.parameters()) {
      const d = p.data;
      for (let i = 0; i < d.length; i++) digest += d[i] * ((i % 7) + 1);
    }
    const lo = Float64Array.of(digest);
    const hi = Float64Array.of(digest);
    await this.collective(Promise.all([this.mpi.allreduce([lo], "min"), this.mpi.allreduce([hi], "max")]));
    if (lo[0] !== hi[0] && !(Number.isNaN(lo[0]) && Number.isNaN(hi[0])))
      throw new DistributedError(
        `the ranks' weights differ (digest ${lo[0]} to ${hi[0]}): the all-reduce did not give every rank the same sum`,
      );
  }

  /** What this rank prints if mpirun stops it because another rank died. */
  setExitNote(text: string): void {
    this.mpi.setExitNote(text);
  }

  barrier(): Promise<number> {
    return this.collective(this.mpi.barrier());
  }

  /** Normal end (MPI_Finalize, collective: every rank must reach it). */
  finalize(): void {
    this.mpi.finalize();
  }

  /** Ends every rank of the job now (MPI_Abort). */
  abort(code: number): void {
    this.mpi.abort(code);
  }

  private async collective<T>(p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (e) {
      throw new DistributedError(`${this.describe()}: ${(e as Error).message}`);
    }
  }
}
