// Worker thread of the DataLoader: holds a copy of the uint8 dataset and prepares batches on request, so
// augmentation and resizing run beside training instead of in front of it. Results move back transferred.

import { parentPort } from "node:worker_threads";
import { type BatchConfig, BatchPreparer } from "./batch.js";

export type WorkerRequest =
  | { type: "init"; images: Uint8Array; labels: Uint8Array; config: BatchConfig }
  | { type: "batch"; id: number; indices: Int32Array<ArrayBuffer>; seed: number };

export type WorkerResponse =
  | {
      type: "batch";
      id: number;
      x: Float32Array<ArrayBuffer>;
      y: Int32Array<ArrayBuffer>;
      indices: Int32Array<ArrayBuffer>;
    }
  | { type: "error"; id: number; message: string };

if (parentPort === null) throw new Error("loader-worker.js must run as a worker thread");
const port = parentPort;
let preparer: BatchPreparer | undefined;

port.on("message", (message: WorkerRequest) => {
  if (message.type === "init") {
    preparer = new BatchPreparer(message.images, message.labels, message.config);
    return;
  }
  try {
    if (preparer === undefined) throw new Error("loader worker received a batch request before init");
    const { x, y } = preparer.prepare(message.indices, message.seed);
    const response: WorkerResponse = { type: "batch", id: message.id, x, y, indices: message.indices };
    port.postMessage(response, [x.buffer, y.buffer, message.indices.buffer]);
  } catch (err) {
    const response: WorkerResponse = {
      type: "error",
      id: message.id,
      message: err instanceof Error ? err.message : String(err),
    };
    port.postMessage(response);
  }
});
