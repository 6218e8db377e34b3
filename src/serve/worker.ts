// Worker-thread entry of the inference server: this thread owns the model and the native kernels, so a
// batch runs without blocking the HTTP thread, which keeps accepting requests and answering health checks.
import { parentPort, workerData } from "node:worker_threads";
import { noGrad } from "../autograd.js";
import { configureBackend } from "../backend/index.js";
import { loadNativeAddon } from "../backend/native.js";
import { prepackForInference } from "../nn/layers.js";
import { Tensor } from "../tensor.js";
import { loadModel } from "../train/checkpoint.js";
import { inputShape } from "./classify.js";
import type { FromModelThread, ModelSource, ToModelThread } from "./model-thread.js";

/** How long kernel threads poll, idle or at a barrier, before they sleep, in microseconds (native/threadpool.cc). */
const IDLE_SPIN_US = 50;

const port = parentPort;
if (!port) throw new Error("serve/worker.js runs only as a worker thread");
const post = (m: FromModelThread, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

try {
  const source = workerData as ModelSource;
  const backend = configureBackend(source.runtime ?? {});
  // Between batches the kernel threads would poll for 2 ms, CPU the HTTP thread needs: a short poll covers
  // the gaps between one batch's kernels, and a batch's first kernel wakes them.
  if (backend.name === "native") {
    const addon = loadNativeAddon();
    if (!(addon instanceof Error)) addon.setIdleSpin(IDLE_SPIN_US);
  }
  const { model } = loadModel(source.weights, source.fallback);
  // Eval mode, and the fully connected weights packed once for the many batches to come.
  prepackForInference(model);
  const shape = inputShape(model.config, source.resize);
  port.on("message", (m: ToModelThread) => {
    try {
      const logits = noGrad(() => model.forward(new Tensor(m.input, [m.n, ...shape])));
      // A copy the worker can hand over: the output tensor's buffer may be pooled and reused.
      const out = logits.data.slice();
      post({ op: "done", id: m.id, logits: out }, [out.buffer]);
    } catch (e) {
      post({ op: "error", id: m.id, message: (e as Error).message });
    }
  });
  post({ op: "ready", config: model.config, backend: backend.name });
} catch (e) {
  post({ op: "failed", message: (e as Error).message });
  port.close();
}
