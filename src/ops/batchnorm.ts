// batch_norm over the channel dimension of (N, C, ...) inputs.
// Training: normalise with the batch mean and biased variance; update running statistics with the
// unbiased variance (as PyTorch). Evaluation: normalise with the running statistics (an affine map).
// With `relu`, a following ReLU is fused: the kernel writes max(0, y) and the backward applies its mask
// (unless the consumer of the output already did, see activation.ts).
import { record } from "../autograd.js";
import { backend } from "../backend/index.js";
import { adopt, give, takeFloat32 } from "../memory.js";
import { formatShape, Tensor } from "../tensor.js";
import { reluGradient } from "./activation.js";

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
