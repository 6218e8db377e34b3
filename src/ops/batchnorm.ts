// batch_norm over the channel dimension of (N, C, ...) inputs.
// Training: normalise with the batch mean and biased variance; update running statistics with the
// unbiased variance (as PyTorch). Evaluation: normalise with the running statistics (an affine map).
// With `relu`, a following ReLU is fused: the kernel writes max(0, y) and the backward applies its mask
// (unless the consumer of the output already did, see activation.ts).
import { record, recordDevice } from "../autograd.js";
import { backend } from "../backend/index.js";
import * as gpu from "../backend/webgpu/batchnorm.js";
import type { WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import { adopt, give, takeFloat32 } from "../memory.js";
import { formatShape, Tensor } from "../tensor.js";
import { reluGradient, reluGradientOnDevice } from "./activation.js";
import { gpuArray, gpuOf, gradOn } from "./device.js";

export interface BatchNormOptions {
  training: boolean;
  momentum?: number;
  eps?: number;
  /** Apply ReLU to the output (BatchNorm2d followed by ReLU, as one op). */
  relu?: boolean;
}

export function batchNorm(
  x: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  weight: Tensor | null,
  bias: Tensor | null,
  o: BatchNormOptions,
): Tensor {
  const momentum = o.momentum ?? 0.1;
  const eps = o.eps ?? 1e-5;
  const relu = o.relu ?? false;
  if (x.ndim < 2)
    throw new RangeError(
      `Expected input of shape [N, C, ...] for batch_norm but received ${formatShape(x.shape)}`,
    );
  const [n, c] = x.shape;
  const hw = x.size / (n * c || 1);
  for (const [name, t] of [
    ["running_mean", runningMean],
    ["running_var", runningVar],
    ["weight", weight],
    ["bias", bias],
  ] as const)
    if (t && t.size !== c)
      throw new RangeError(
        `Expected ${name} of shape [${c}] for batch_norm of ${formatShape(x.shape)} but received ${formatShape(t.shape)}`,
      );
  const dev = gpuOf("batch_norm", x, [
    ["running_mean", runningMean],
    ["running_var", runningVar],
    ["weight", weight],
    ["bias", bias],
  ]);
  if (dev)
    return batchNormOnDevice(dev, x, runningMean, runningVar, weight, bias, { ...o, momentum, eps, relu });
  const gamma = weight ? weight.data : new Float32Array(c).fill(1);
  const beta = bias ? bias.data : new Float32Array(c);
  // Every element of y (and of dx below) is written, so both may come from the buffer pool (memory.ts).
  const y = takeFloat32(x.size);
  const mean = new Float32Array(c);
  const invStd = new Float32Array(c);
  const useBatchStats = o.training || !runningMean || !runningVar;
  if (useBatchStats) {
    const count = n * hw;
    if (o.training && count <= 1)
      throw new RangeError(
        `Expected more than 1 value per channel when training batch_norm, got input ${formatShape(x.shape)}`,
      );
    backend().batchNormForwardTrain(y, mean, invStd, x.data, gamma, beta, n, c, hw, eps, relu);
    if (o.training && runningMean && runningVar)
      for (let ch = 0; ch < c; ch++) {
        const biasedVar = 1 / (invStd[ch] * invStd[ch]) - eps;
        runningMean.data[ch] = (1 - momentum) * runningMean.data[ch] + momentum * mean[ch];
        runningVar.data[ch] =
          (1 - momentum) * runningVar.data[ch] + (momentum * biasedVar * count) / (count - 1);
      }
  } else {
    const scale = new Float32Array(c);
    const shift = new Float32Array(c);
    for (let ch = 0; ch < c; ch++) {
      mean[ch] = runningMean.data[ch];
      invStd[ch] = 1 / Math.sqrt(runningVar.data[ch] + eps);
      scale[ch] = gamma[ch] * invStd[ch];
      shift[ch] = beta[ch] - mean[ch] * scale[ch];
    }
    backend().channelAffine(y, x.data, scale, shift, n, c, hw, relu);
  }
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return record(adopt(new Tensor(y, x.shape)), relu ? "batch_norm+relu" : "batch_norm", inputs, (grad) => {
    // The fused ReLU's mask first (a gradient its consumer already masked passes through).
    const dy = relu ? reluGradient(grad, y) : grad;
    const dx = takeFloat32(x.size);
    const dgamma = new Float32Array(c);
    const dbeta = new Float32Array(c);
    if (useBatchStats)
      backend().batchNormBackward(dx, dgamma, dbeta, dy, x.data, gamma, mean, invStd, n, c, hw);
    else {
      // Fixed statistics: dx = dy * gamma * invStd, a per-channel scale.
      const k = new Float32Array(c);
      for (let ch = 0; ch < c; ch++) k[ch] = gamma[ch] * invStd[ch];
      backend().channelAffine(dx, dy, k, new Float32Array(c), n, c, hw);
      if (weight || bias)
        for (let ch = 0; ch < c; ch++)
          for (let b = 0; b < n; b++) {
            const off = (b * c + ch) * hw;
            for (let p = 0; p < hw; p++) {
              dgamma[ch] += dy[off + p] * (x.data[off + p] - mean[ch]) * invStd[ch];
              dbeta[ch] += dy[off + p];
            }
          }
    }
    if (dy !== grad) give(dy);
    return [dx, ...(weight ? [dgamma] : []), ...(bias ? [dbeta] : [])];
  });
}

/** batch_norm of tensors on a WebGPU device (training, or fixed statistics without gradients). */
function batchNormOnDevice(
  dev: WebGpuDevice,
  x: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  weight: Tensor | null,
  bias: Tensor | null,
  o: Required<BatchNormOptions>,
): Tensor {
  const ctx = dev.ctx;
  const [n, c] = x.shape;
  const hw = x.size / (n * c || 1);
  const gamma = weight ? gpuArray(weight) : dev.full(c, 1).array;
  const beta = bias ? gpuArray(bias) : dev.full(c, 0).array;
  const y = dev.alloc(x.size);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  const op = o.relu ? "batch_norm+relu" : "batch_norm";
  if (!o.training && runningMean && runningVar) {
    const [scale, shift] = [dev.alloc(c), dev.alloc(c)];
    gpu.runningScaleShift(
      ctx,
      scale.array,
      shift.array,
      gpuArray(runningMean),
      gpuArray(runningVar),
      gamma,
      beta,
      o.eps,
    );
    gpu.channelAffine(ctx, y.array, gpuArray(x), scale.array, shift.array, n, c, hw, o.relu);
    scale.release();
    shift.release();
    return recordDevice(new Tensor(y, x.shape), op, inputs, () => {
      throw new Error("batch_norm's backward with running statistics (eval mode) has no webgpu kernel yet");
    });
  }
  const count = n * hw;
  if (count <= 1)
    throw new RangeError(
      `Expected more than 1 value per channel when training batch_norm, got input ${formatShape(x.shape)}`,
    );
  const [mean, invStd] = [dev.alloc(c), dev.alloc(c)];
  gpu.batchNormForwardTrain(
    ctx,
    y.array,
    mean.array,
    invStd.array,
    gpuArray(x),
    gamma,
    beta,
    n,
    c,
    hw,
    o.eps,
    o.relu,
  );
  if (o.training && runningMean && runningVar)
    gpu.updateRunningStats(
      ctx,
      gpuArray(runningMean),
      gpuArray(runningVar),
      mean.array,
      invStd.array,
      o.momentum,
      o.eps,
      count,
    );
  const out = recordDevice(new Tensor(y, x.shape), op, inputs, (grad) => {
    const g = gradOn(dev, grad);
    const dy = o.relu ? reluGradientOnDevice(dev, g, y) : g;
    const [dx, dgamma, dbeta] = [dev.alloc(x.size), dev.alloc(c), dev.alloc(c)];
    gpu.batchNormBackward(
      ctx,
      dx.array,
      dgamma.array,
      dbeta.array,
      dy.array,
      gpuArray(x),
      gamma,
      mean.array,
      invStd.array,
      n,
      c,
      hw,
    );
    if (dy !== g) dy.release();
    mean.release();
    invStd.release();
    return [dx, ...(weight ? [dgamma] : []), ...(bias ? [dbeta] : [])];
  });
  if (!out.node) {
    mean.release();
    invStd.release();
  }
  return out;
}
