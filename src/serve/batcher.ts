// Dynamic batching: requests wait in a bounded queue and run together, up to `maxBatch` images per batch,
// once a model thread is free and either the queue holds a full batch, or the oldest request has waited
// `maxDelayMs` (counted from when a model thread came free for it, if later than its arrival), or every
// client that could send one has a request waiting or running (`senders`: then nobody can join). Up to
// `concurrency` batches run at a time (one per model thread), so under load the requests that arrive while
// the model threads are busy form the next batch and batches grow with the load.

export interface BatcherOptions {
  /** Largest batch, in images. */
  maxBatch: number;
  /** How long a batch may wait for requests to join it, from when a model thread is free and a request waits. */
  maxDelayMs: number;
  /** Images allowed to wait; a request that would exceed it is refused with QueueFullError. */
  maxQueue: number;
  /** Floats in one image's input and in one image's output. */
  inputSize: number;
  outputSize: number;
  /** Batches allowed to run at the same time (the model threads); 1 if absent. */
  concurrency?: number;
  /** Runs n images (inputs concatenated) and resolves with their outputs concatenated. */
  run: (input: Float32Array, n: number) => Promise<Float32Array>;
  /** Told of every batch that ran: its size and how long the run took. */
  onBatch?: (n: number, seconds: number) => void;
  /**
   * How many requests could be waiting at most now (the server's open connections, one request each):
   * once that many are queued or running, no other can join the next batch, which then starts at once.
   */
  senders?: () => number;
  /**
   * Told when the cores become shared or free again: shared while more than one thing wants them, two
   * batches running, or one running and requests waiting (for the HTTP thread, then a batch). A server
   * then runs each batch's kernels on its own model thread instead of the kernel pool's threads.
   */
  onShared?: (shared: boolean) => void;
  /** Milliseconds from some fixed start (tests pass their own clock); performance.now if absent. */
  clock?: () => number;
}

/**
 * A request's tie to its client: gone() when the client closes its connection before the answer, which
 * withdraws the request's images if they still wait. An AbortController would do, but one per request (an
 * EventTarget and its event) costs more of the HTTP thread than the queueing itself.
 */
export class ClientTie {
  private listeners: (() => void)[] = [];
  private isGone = false;

  get goneAlready(): boolean {
    return this.isGone;
  }

  /** Calls fn once when the client goes away. */
  onGone(fn: () => void): void {
    if (this.isGone) fn();
    else this.listeners.push(fn);
  }

  gone(): void {
    if (this.isGone) return;
    this.isGone = true;
    for (const fn of this.listeners.splice(0)) fn();
  }
}

/** The queue is full: the client should retry later (HTTP 503 with Retry-After). */
export class QueueFullError extends Error {}
/** The request waited longer than its timeout (HTTP 504). */
export class RequestTimeoutError extends Error {}
/** The batcher is closed and takes no more requests (HTTP 503). */
export class ClosedError extends Error {}

interface Pending {
  input: Float32Array;
  n: number;
  enqueuedAt: number;
  resolve: (out: Float32Array) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
  settled: boolean;
}

export class Batcher {
  private readonly queue: Pending[] = [];
  private queuedImages = 0;
  private runs = 0;
  /** Requests in the batches that are running. */
  private runningRequests = 0;
  /** When a model thread last came free while requests waited for it (the delay counts from then). */
  private freeSince = 0;
  private readonly concurrency: number;
  private readonly now: () => number;
  private timer?: NodeJS.Timeout;
  private flushing = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private shared = false;

  constructor(private readonly o: BatcherOptions) {
    for (const k of ["maxBatch", "maxQueue", "inputSize", "outputSize"] as const)
      if (!Number.isInteger(o[k]) || o[k] < 1)
        throw new RangeError(`Expected ${k} to be a positive integer but received ${o[k]}`);
    if (!(o.maxDelayMs >= 0)) throw new RangeError(`Expected maxDelayMs >= 0 but received ${o.maxDelayMs}`);
    this.concurrency = o.concurrency ?? 1;
    this.now = o.clock ?? (() => performance.now());
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1)
      throw new RangeError(`Expected concurrency to be a positive integer but received ${o.concurrency}`);
  }

  /** Images waiting (not counting the batches that are running). */
  get depth(): number {
    return this.queuedImages;
  }

  /** Batches running now. */
  get running(): number {
    return this.runs;
  }

  /** Whether n more images fit in the queue now. */
  hasRoom(n: number): boolean {
    return this.queuedImages + n <= this.o.maxQueue;
  }

  /** The refusal for a request that does not fit. */
  fullError(): QueueFullError {
    return new QueueFullError(
      `the queue is full (${this.queuedImages} of ${this.o.maxQueue} images waiting); retry later`,
    );
  }

  /**
   * Queues n images (inputs concatenated, n <= maxBatch) and resolves with their outputs; rejects with
   * QueueFullError at once when they do not fit, or RequestTimeoutError after timeoutMs (0: never).
   * The client going away (tie.gone()) takes the images out of the queue if they are still waiting.
   */
  submit(input: Float32Array, n: number, timeoutMs = 0, tie?: ClientTie): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new ClosedError("the server is shutting down"));
    if (tie?.goneAlready) return Promise.reject(new Error("the client went away"));
    if (!Number.isInteger(n) || n < 1 || n > this.o.maxBatch)
      return Promise.reject(new RangeError(`Expected 1 to ${this.o.maxBatch} images but received ${n}`));
    if (input.length !== n * this.o.inputSize)
      return Promise.reject(
        new RangeError(
          `Expected ${n * this.o.inputSize} input values for ${n} images but received ${input.length}`,
        ),
      );
    if (!this.hasRoom(n)) return Promise.reject(this.fullError());
    return new Promise((resolve, reject) => {
      const p: Pending = { input, n, enqueuedAt: this.now(), resolve, reject, settled: false };
      const withdraw = (e: Error) => {
        const i = this.queue.indexOf(p);
        if (i >= 0) {
          this.queue.splice(i, 1);
          this.queuedImages -= p.n;
          this.noteShared();
        }
        this.settle(p, e);
      };
      if (timeoutMs > 0)
        p.timer = setTimeout(
          () => withdraw(new RequestTimeoutError(`the request took longer than ${timeoutMs} ms`)),
          timeoutMs,
        );
      tie?.onGone(() => withdraw(new Error("the client went away")));
      this.queue.push(p);
      this.queuedImages += n;
      this.noteShared();
      this.schedule();
    });
  }

  /** From now on batches start as soon as the model is free, without waiting for the delay (shutdown). */
  flush(): void {
    this.flushing = true;
    this.schedule();
  }

  /** Flushes, refuses new requests, and resolves when every queued request is answered. */
  async close(): Promise<void> {
    this.closed = true;
    this.flush();
    if (this.runs > 0 || this.queue.length > 0) await new Promise<void>((ok) => this.idleWaiters.push(ok));
  }

  private noteShared(): void {
    const shared = this.runs + (this.queue.length > 0 ? 1 : 0) > 1;
    if (shared === this.shared) return;
    this.shared = shared;
    this.o.onShared?.(shared);
  }

  private settle(p: Pending, result: Float32Array | Error): void {
    if (p.settled) return;
    p.settled = true;
    clearTimeout(p.timer);
    if (result instanceof Error) p.reject(result);
    else p.resolve(result);
  }

  private schedule(): void {
    if (this.runs >= this.concurrency) return;
    if (this.queue.length === 0) {
      clearTimeout(this.timer);
      this.timer = undefined;
      if (this.runs === 0) for (const ok of this.idleWaiters.splice(0)) ok();
      return;
    }
    // The delay runs from the later of the oldest request's arrival and the moment a model thread came free
    // for it: requests that waited out a running batch still give the next batch time to fill.
    const waited = this.now() - Math.max(this.queue[0].enqueuedAt, this.freeSince);
    // Every client that could send a request has one waiting or running: none can join, so do not wait.
    const nobodyElse =
      this.o.senders !== undefined && this.queue.length + this.runningRequests >= this.o.senders();
    if (this.flushing || this.queuedImages >= this.o.maxBatch || waited >= this.o.maxDelayMs || nobodyElse) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.dispatch();
      // Another model thread may be free for what is left (more than a batch was waiting).
      this.schedule();
    } else if (!this.timer)
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.schedule();
        },
        Math.max(1, Math.ceil(this.o.maxDelayMs - waited)),
      );
  }

  private dispatch(): void {
    const batch: Pending[] = [];
    let n = 0;
    while (this.queue.length > 0 && n + this.queue[0].n <= this.o.maxBatch) {
      const p = this.queue.shift() as Pending;
      batch.push(p);
      n += p.n;
    }
    this.queuedImages -= n;
    const input = new Float32Array(n * this.o.inputSize);
    let offset = 0;
    for (const p of batch) {
      input.set(p.input, offset);
      offset += p.input.length;
    }
    this.runs++;
    this.runningRequests += batch.length;
    this.noteShared();
    const started = this.now();
    // The next batch starts before this one's answers are sent: the model thread is not kept waiting while
    // the HTTP thread writes them.
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      this.runs--;
      this.runningRequests -= batch.length;
      if (this.queue.length > 0) this.freeSince = this.now();
      this.schedule();
      this.noteShared();
    };
    this.o
      .run(input, n)
      .then((out) => {
        finished();
        this.o.onBatch?.(n, (this.now() - started) / 1000);
        let row = 0;
        for (const p of batch) {
          const size = p.n * this.o.outputSize;
          this.settle(p, out.slice(row, row + size));
          row += size;
        }
      })
      .catch((e: Error) => {
        finished();
        for (const p of batch) this.settle(p, e);
      });
  }
}
