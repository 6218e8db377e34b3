// conv2d: forward, the two backward passes and validation, in one place.
//
// Forward:  y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] * x[n, c, i*s - pad + p, j*s - pad + q]
// Backward: dL/dx is itself a convolution (dy against the flipped kernel, a "transposed convolution"),
//           dL/dw correlates x with dy, and dL/db sums dy over batch and space.
import { record, recordDevice } from "../autograd.js";
import type { Conv2dGeometry } from "../backend/backend.js";
import { backend } from "../backend/index.js";
import * as gpu from "../backend/webgpu/conv2d.js";
import type { WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import { adopt, give, takeFloat32 } from "../memory.js";
import { formatShape, Tensor } from "../tensor.js";
import { isReluOutput, markReluMasked, reluGradient, reluGradientOnDevice } from "./activation.js";
import { gpuArray, gpuOf, gradOn } from "./device.js";
import { type Pair, pair } from "./util.js";

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair;
  /** Apply ReLU in the same pass (the result equals relu(conv2d(...))). */
  relu?: boolean;
}

export function conv2dGeometry(
  xShape: readonly number[],
  wShape: readonly number[],
  options: Conv2dOptions = {},
) {
  const [strideH, strideW] = pair(options.stride ?? 1, "stride");
  const [padH, padW] = pair(options.padding ?? 0, "padding");
  const [cOut, cInW, kh, kw] = wShape;
  const desc = `conv2d with weight ${formatShape(wShape)}`;
  if (wShape.length !== 4)
    throw new RangeError(
      `Expected a weight of shape [C_out, C_in, kH, kW] but received ${formatShape(wShape)}`,
    );
  if (xShape.length !== 4 || xShape[1] !== cInW)
    throw new RangeError(
      `Expected input of shape [N, ${cInW}, H, W] for ${desc} but received ${formatShape(xShape)}`,
    );
  if (strideH < 1 || strideW < 1 || padH < 0 || padW < 0)
    throw new RangeError(
      `Expected stride >= 1 and padding >= 0 for ${desc} but received stride ${strideH}x${strideW}, padding ${padH}x${padW}`,
    );
  const [n, cIn, h, w] = xShape;
  const outH = Math.floor((h + 2 * padH - kh) / strideH) + 1;
  const outW = Math.floor((w + 2 * padW - kw) / strideW) + 1;
  if (outH < 1 || outW < 1)
    throw new RangeError(
      `Input ${formatShape(xShape)} is too small for ${desc} (kernel ${kh}x${kw}, padding ${padH}x${padW}): the output would be ${outH}x${outW}`,
    );
  const g: Conv2dGeometry = { n, cIn, h, w, cOut, kh, kw, strideH, strideW, padH, padW, outH, outW };
  return g;
}

/** 2-D convolution of x (N, C_in, H, W) with weight (C_out, C_in, kH, kW) and optional bias (C_out). */
export function conv2d(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null = null,
  options: Conv2dOptions = {},
): Tensor {
  const g = conv2dGeometry(x.shape, weight.shape, options);
  if (bias && (bias.ndim !== 1 || bias.size !== g.cOut))
    throw new RangeError(
      `Expected a bias of shape [${g.cOut}] for conv2d but received ${formatShape(bias.shape)}`,
    );
  const relu = options.relu ?? false;
  const dev = gpuOf("conv2d", x, [
    ["weight", weight],
    ["bias", bias],
  ]);
  if (dev) return conv2dOnDevice(dev, x, weight, bias, g, relu);
  // The kernel writes every element, so the output may come from the buffer pool (memory.ts).
  const y = takeFloat32(g.n * g.cOut * g.outH * g.outW);
  backend().conv2dForward(y, x.data, weight.data, bias ? bias.data : null, g, relu);
  const out = adopt(new Tensor(y, [g.n, g.cOut, g.outH, g.outW]));
  const inputs = bias ? [x, weight, bias] : [x, weight];
  // When x is itself a ReLU output, that ReLU's backward is fused into the input gradient (see activation.ts).
  const reluMask = isReluOutput(x) ? x.data : null;
  return record(out, relu ? "conv2d+relu" : "conv2d", inputs, (gradOut) => {
    const dy = relu ? reluGradient(gradOut, y) : gradOut;
    const dx = x.requiresGrad ? takeFloat32(x.size) : null;
    if (dx) backend().conv2dBackwardInput(dx, dy, weight.data, g, reluMask);
    if (dx && reluMask) markReluMasked(dx);
    let dw: Float32Array | null = null;
    let db: Float32Array | null = null;
    if (weight.requiresGrad || bias?.requiresGrad) {
      dw = takeFloat32(weight.size);
      db = bias ? takeFloat32(g.cOut) : null;
      backend().conv2dBackwardWeight(dw, db, dy, x.data, g);
    }
    if (dy !== gradOut) give(dy);
    return bias ? [dx, dw, db] : [dx, dw];
  });
}

/** conv2d of tensors on a WebGPU device: the same passes as above, on the device's kernels. */
function conv2dOnDevice(
  dev: WebGpuDevice,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  g: Conv2dGeometry,
  relu: boolean,
): Tensor {
  const y = dev.alloc(g.n * g.cOut * g.outH * g.outW);
  gpu.conv2dForward(dev.ctx, y.array, gpuArray(x), gpuArray(weight), bias ? gpuArray(bias) : null, g, relu);
  const out = new Tensor(y, [g.n, g.cOut, g.outH, g.outW]);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  const fuseMask = isReluOutput(x);
  return recordDevice(out, relu ? "conv2d+relu" : "conv2d", inputs, (gradOut) => {
    const grad = gradOn(dev, gradOut);
    const dy = relu ? reluGradientOnDevice(dev, grad, y) : grad;
    const dx = x.requiresGrad ? dev.alloc(x.size) : null;
    if (dx)
      gpu.conv2dBackwardInput(
        dev.ctx,
        dx.array,
        dy.array,
        gpuArray(weight),
        g,
        fuseMask ? gpuArray(x) : null,
      );
    if (dx && fuseMask) markReluMasked(dx);
    let dw = null;
    let db = null;
    if (weight.requiresGrad || bias?.requiresGrad) {
      dw = dev.alloc(weight.size);
      db = bias ? dev.alloc(g.cOut) : null;
      gpu.conv2dBackwardWeight(dev.ctx, dw.array, db ? db.array : null, dy.array, gpuArray(x), g);
    }
    if (dy !== grad) dy.release();
    return bias ? [dx, dw, db] : [dx, dw];
  });
}
