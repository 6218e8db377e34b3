// The server's Prometheus metrics (prom-client), on a registry of its own so that several servers in one
// process (tests) do not share counters: requests and errors by route and status, the queue's depth,
// batch sizes, request latency and batch run time, and prom-client's process metrics (RSS, CPU, GC).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Routes as metric labels: a fixed set, so a client cannot grow the label space with odd paths. */
export type RouteLabel = "classify" | "infer" | "health" | "metadata" | "metrics" | "page" | "other";

export class ServeMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"route" | "code">;
  private readonly errors: Counter<"route" | "code">;
  private readonly latency: Histogram<"route">;
  private readonly batchSize: Histogram;
  private readonly batchSeconds: Histogram;

  /** queueDepth: images waiting; inFlight: requests received and not yet answered; running: batches running. */
  constructor(queueDepth: () => number, maxBatch: number, inFlight: () => number, running: () => number) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: "vgg_serve_requests_total",
      help: "HTTP requests answered, by route and status code",
      labelNames: ["route", "code"],
      registers,
    });
    this.errors = new Counter({
      name: "vgg_serve_errors_total",
      help: "HTTP requests answered with a status of 400 or more, by route and status code",
      labelNames: ["route", "code"],
      registers,
    });
    this.latency = new Histogram({
      name: "vgg_serve_request_duration_seconds",
      help: "Time from a request's arrival to the end of its answer",
      labelNames: ["route"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    const sizes: number[] = [];
    for (let b = 1; b < maxBatch; b *= 2) sizes.push(b);
    this.batchSize = new Histogram({
      name: "vgg_serve_batch_size",
      help: "Images per batch run by the model",
      buckets: [...sizes, maxBatch],
      registers,
    });
    this.batchSeconds = new Histogram({
      name: "vgg_serve_batch_duration_seconds",
      help: "Time the model thread took for one batch, including the hand-over between threads",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    new Gauge({
      name: "vgg_serve_requests_in_flight",
      help: "Requests received and not yet answered (this scrape included)",
      registers,
      collect() {
        this.set(inFlight());
      },
    });
    new Gauge({
      name: "vgg_serve_batch_running",
      help: "Batches the model threads are running now (0 when idle)",
      registers,
      collect() {
        this.set(running());
      },
    });
    new Gauge({
      name: "vgg_serve_queue_images",
      help: "Images waiting for a batch",
      registers,
      collect() {
        this.set(queueDepth());
      },
    });
  }

  request(route: RouteLabel, code: number, seconds: number): void {
    this.requests.inc({ route, code });
    if (code >= 400) this.errors.inc({ route, code });
    this.latency.observe({ route }, seconds);
  }

  batch(n: number, seconds: number): void {
    this.batchSize.observe(n);
    this.batchSeconds.observe(seconds);
  }
}
