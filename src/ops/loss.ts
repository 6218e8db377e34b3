// Losses: log_softmax (stable: x - max - log sum exp), nll_loss and cross_entropy (mean reduction).
import { record, recordDevice } from "../autograd.js";
import { backend } from "../backend/index.js";
import type { WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import { scaleByScalar } from "../backend/webgpu/elementwise.js";
import { softmaxCrossEntropy } from "../backend/webgpu/loss.js";
import { formatShape, Tensor } from "../tensor.js";
import { gpuArray, gpuOf, gradOn } from "./device.js";
import { noDeviceKernel } from "./pool.js";

export type Targets = Int32Array | readonly number[];

function checkTargets(targets: Targets, n: number, c: number, op: string): Int32Array {
  if (targets.length !== n)
    throw new RangeError(`Expected ${n} targets for ${op} but received ${targets.length}`);
  const t = Int32Array.from(targets);
  for (let i = 0; i < n; i++)
    if (!(t[i] >= 0 && t[i] < c) || t[i] !== targets[i])
      throw new RangeError(
        `Expected target class indices in [0, ${c}) for ${op} but target ${i} is ${targets[i]}`,
      );
  return t;
}

function expect2d(x: Tensor, op: string): [number, number] {
  if (x.ndim !== 2)
    throw new RangeError(`Expected input of shape [N, C] for ${op} but received ${formatShape(x.shape)}`);
  return [x.shape[0], x.shape[1]];
}

/** log_softmax over dim 1 of (N, C). Backward: dx = dy - softmax * sum(dy). */
export function logSoftmax(x: Tensor): Tensor {
  const [n, c] = expect2d(x, "log_softmax");
  if (x.deviceStorage) throw noDeviceKernel("log_softmax", x);
  const y = new Float32Array(x.size);
  for (let i = 0; i < n; i++) {
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < c; j++) max = Math.max(max, x.data[i * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(x.data[i * c + j] - max);
    const lse = max + Math.log(s);
    for (let j = 0; j < c; j++) y[i * c + j] = x.data[i * c + j] - lse;
  }
  return record(new Tensor(y, x.shape), "log_softmax", [x], (dy) => {
    const dx = new Float32Array(x.size);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < c; j++) s += dy[i * c + j];
      for (let j = 0; j < c; j++) dx[i * c + j] = dy[i * c + j] - Math.exp(y[i * c + j]) * s;
    }
    return [dx];
  });
}

/** Negative log-likelihood of log-probabilities (N, C), mean over the batch. */
export function nllLoss(logProbs: Tensor, targets: Targets): Tensor {
  const [n, c] = expect2d(logProbs, "nll_loss");
  const t = checkTargets(targets, n, c, "nll_loss");
  if (logProbs.deviceStorage) throw noDeviceKernel("nll_loss", logProbs);
  let loss = 0;
  for (let i = 0; i < n; i++) loss -= logProbs.data[i * c + t[i]];
  return record(new Tensor(Float32Array.of(loss / n), []), "nll_loss", [logProbs], (g) => {
    const dx = new Float32Array(n * c);
    for (let i = 0; i < n; i++) dx[i * c + t[i]] = -g[0] / n;
    return [dx];
  });
}

/** Cross-entropy of logits (N, C) against class indices, mean over the batch (fused softmax + NLL). */
export function crossEntropy(logits: Tensor, targets: Targets): Tensor {
  const [n, c] = expect2d(logits, "cross_entropy");
  const t = checkTargets(targets, n, c, "cross_entropy");
  const dev = gpuOf("cross_entropy", logits);
  if (dev) return crossEntropyOnDevice(dev, logits, t, n, c);
  const dlogits = new Float32Array(n * c);
  const loss = backend().softmaxCrossEntropy(dlogits, logits.data, t, n, c);
  return record(new Tensor(Float32Array.of(loss), []), "cross_entropy", [logits], (g) => {
    const dx = new Float32Array(n * c);
    for (let i = 0; i < dx.length; i++) dx[i] = dlogits[i] * g[0];
    return [dx];
  });
}

/** Cross-entropy on a WebGPU device: the targets go up, the mean loss stays on the device. */
function crossEntropyOnDevice(
  dev: WebGpuDevice,
  logits: Tensor,
  t: Int32Array,
  n: number,
  c: number,
): Tensor {
  const ctx = dev.ctx;
  const dlogits = dev.alloc(n * c);
  const loss = dev.alloc(1);
  const targets = dev.upload(t);
  softmaxCrossEntropy(ctx, dlogits.array, loss.array, gpuArray(logits), targets.array, n, c);
  targets.release();
  const out = recordDevice(new Tensor(loss, []), "cross_entropy", [logits], (g) => {
    const dx = dev.alloc(n * c);
    scaleByScalar(ctx, dx.array, dlogits.array, gradOn(dev, g).array);
    dlogits.release();
    return [dx];
  });
  if (!out.node) dlogits.release();
  return out;
}
