// The yardstick for `npm run bench:serve`: a minimal Node server around onnxruntime-node running vgg-ts's
// ONNX export, speaking the same POST /v1/classify (image body) and batching the same way (the same
// Batcher, preprocessing and top-k), with the batch sizes in /metrics. onnxruntime runs a session on
// its own threads, off the event loop, as vgg serve's model thread does.
// Run: node dist/bench/serve-ort.js --onnx FILE --config FILE.json [--port N] [--max-batch 32] ...
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { availableParallelism } from "node:os";
import ort from "onnxruntime-node";
import type { VggConfig } from "../src/models/vgg.js";
import { Batcher, QueueFullError } from "../src/serve/batcher.js";
import { readBody, sendJson } from "../src/serve/body.js";
import { bytesToInput, inputShape, topClasses } from "../src/serve/classify.js";
import { ServeMetrics } from "../src/serve/metrics.js";

const arg = (name: string, dflt?: string): string => {
  const i = process.argv.indexOf(name);
  if (i >= 0) return process.argv[i + 1];
  if (dflt === undefined) throw new Error(`Expected ${name}`);
  return dflt;
};
const config = JSON.parse(readFileSync(arg("--config"), "utf8")) as VggConfig;
const maxBatch = Number(arg("--max-batch", "32"));
// All cores but one, which the HTTP thread needs.
const threads = Number(arg("--threads", String(Math.max(1, availableParallelism() - 1))));
const session = await ort.InferenceSession.create(arg("--onnx"), {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
});
const shape = inputShape(config);
const imageSize = shape[0] * shape[1] * shape[2];
let metrics: ServeMetrics | undefined;
const batcher = new Batcher({
  maxBatch,
  maxDelayMs: Number(arg("--max-delay-ms", "5")),
  maxQueue: Number(arg("--max-queue", "256")),
  inputSize: imageSize,
  outputSize: config.numClasses,
  run: async (x, n) => {
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", x, [n, ...shape]) });
    return out[session.outputNames[0]].data as Float32Array;
  },
  onBatch: (n, s) => metrics?.batch(n, s),
});
let inFlight = 0;
metrics = new ServeMetrics(
  () => batcher.depth,
  maxBatch,
  () => inFlight,
  () => batcher.running,
);
const served = metrics;

const server = createServer(async (req, res) => {
  const started = performance.now();
  const route = req.url?.startsWith("/v1/classify") ? "classify" : "metrics";
  inFlight++;
  res.once("close", () => {
    inFlight--;
    served.request(route, res.statusCode, (performance.now() - started) / 1000);
  });
  try {
    if (route === "metrics") {
      res.end(await served.registry.metrics());
      return;
    }
    if (!batcher.hasRoom(1)) throw batcher.fullError();
    const x = bytesToInput(await readBody(req, 8 << 20), "image", config);
    const logits = await batcher.submit(x, 1, 30_000);
    sendJson(res, 200, { top: topClasses(logits, 5, null) });
  } catch (e) {
    sendJson(res, e instanceof QueueFullError ? 503 : 500, { error: (e as Error).message });
  }
});
server.listen(Number(arg("--port", "0")), "127.0.0.1", () =>
  console.log(`onnxruntime server: http://127.0.0.1:${(server.address() as AddressInfo).port}/`),
);
process.once("SIGTERM", async () => {
  server.close();
  await batcher.close();
  server.closeAllConnections();
  await session.release();
});
