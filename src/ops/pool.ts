// Pooling: max_pool2d (forward keeps the argmax, backward scatters to it) and adaptive_avg_pool2d.
import { record, recordDevice } from "../autograd.js";
import type { Pool2dGeometry } from "../backend/backend.js";
import { backend } from "../backend/index.js";
import type { WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import * as gpu from "../backend/webgpu/pool.js";
import { adopt, give, takeFloat32, takeInt32 } from "../memory.js";
import { formatShape, Tensor } from "../tensor.js";
import { isReluOutput, markReluMasked } from "./activation.js";
import { gpuArray, gpuOf, gradOn } from "./device.js";
import { expectNdim, type Pair, pair } from "./util.js";

export interface MaxPool2dOptions {
  kernelSize: Pair;
  /** Defaults to kernelSize, as in PyTorch. */
  stride?: Pair;
  padding?: Pair;
}

export function maxPool2dGeometry(shape: readonly number[], o: MaxPool2dOptions): Pool2dGeometry {
  const [kh, kw] = pair(o.kernelSize, "kernelSize");
  const [strideH, strideW] = pair(o.stride ?? o.kernelSize, "stride");
  const [padH, padW] = pair(o.padding ?? 0, "padding");
  const desc = `max_pool2d(kernel ${kh}x${kw}, stride ${strideH}x${strideW}, padding ${padH}x${padW})`;
  if (kh < 1 || kw < 1 || strideH < 1 || strideW < 1 || padH < 0 || padW < 0)
    throw new RangeError(`Expected kernel >= 1, stride >= 1 and padding >= 0 for ${desc}`);
  if (2 * padH > kh || 2 * padW > kw)
    throw new RangeError(`Expected padding at most half the kernel size for ${desc} (as PyTorch)`);
  if (shape.length !== 4)
    throw new RangeError(
      `Expected input of shape [N, C, H, W] for ${desc} but received ${formatShape(shape)}`,
    );
  const [n, c, h, w] = shape;
  const outH = Math.floor((h + 2 * padH - kh) / strideH) + 1;
  const outW = Math.floor((w + 2 * padW - kw) / strideW) + 1;
  if (outH < 1 || outW < 1)
    throw new RangeError(
      `Input ${formatShape(shape)} is too small for ${desc}: the output would be ${outH}x${outW}`,
    );
  return { n, c, h, w, kh, kw, strideH, strideW, padH, padW, outH, outW };
}

export function maxPool2d(x: Tensor, options: MaxPool2dOptions): Tensor {
  const g = maxPool2dGeometry(x.shape, options);
  const dev = gpuOf("max_pool2d", x);
  if (dev) return maxPool2dOnDevice(dev, x, g);
  const size = g.n * g.c * g.outH * g.outW;
  // The kernels write every element, so these may come from the buffer pool (memory.ts).
  const y = takeFloat32(size);
  const argmax = takeInt32(size);
  backend().maxPool2dForward(y, argmax, x.data, g);
  // When x is a ReLU output, that ReLU's backward is fused into the scatter (see activation.ts): the value
  // at a window's argmax is the window's max, so the mask there is y > 0.
  const reluOut = isReluOutput(x) ? y : null;
  const out = record(adopt(new Tensor(y, [g.n, g.c, g.outH, g.outW])), "max_pool2d", [x], (dy) => {
    const dx = takeFloat32(x.size);
    backend().maxPool2dBackward(dx, dy, argmax, g, reluOut);
    give(argmax);
    return [reluOut ? markReluMasked(dx) : dx];
  });
  if (!out.node) give(argmax);
  return out;
}

function maxPool2dOnDevice(dev: WebGpuDevice, x: Tensor, g: Pool2dGeometry): Tensor {
  const size = g.n * g.c * g.outH * g.outW;
  const y = dev.alloc(size);
  const argmax = dev.alloc(size, "i32");
  gpu.maxPool2dForward(dev.ctx, y.array, argmax.array, gpuArray(x), g);
  const fuse = isReluOutput(x);
  const out = recordDevice(new Tensor(y, [g.n, g.c, g.outH, g.outW]), "max_pool2d", [x], (dy) => {
    const dx = dev.alloc(x.size);
    gpu.maxPool2dBackward(dev.ctx, dx.array, gradOn(dev, dy).array, argmax.array, g, fuse ? y.array : null);
    argmax.release();
    return [fuse ? markReluMasked(dx) : dx];
  });
  if (!out.node) argmax.release();
  return out;
}

/** PyTorch's adaptive window for output index i: [floor(i*in/out), ceil((i+1)*in/out)). */
function windows(inSize: number, outSize: number): [number, number][] {
  const w: [number, number][] = [];
  for (let i = 0; i < outSize; i++)
    w.push([Math.floor((i * inSize) / outSize), Math.ceil(((i + 1) * inSize) / outSize)]);
  return w;
}

/** Average pooling to a fixed output size (torchvision's VGG uses 7x7). */
export function adaptiveAvgPool2d(x: Tensor, outputSize: Pair): Tensor {
  expectNdim(x, 4, "adaptive_avg_pool2d", "[N, C, H, W]");
  const [oh, ow] = pair(outputSize, "outputSize");
  if (oh < 1 || ow < 1) throw new RangeError(`Expected an output size >= 1 but received ${oh}x${ow}`);
  const [n, c, h, w] = x.shape;
  if (h < 1 || w < 1)
    throw new RangeError(
      `Expected a non-empty input for adaptive_avg_pool2d but received ${formatShape(x.shape)}`,
    );
  if (gpuOf("adaptive_avg_pool2d", x)) {
    // The identity (torchvision's 7x7 pool after a 224 trunk) is all a VGG needs on the device.
    if (h === oh && w === ow) return x;
    throw noDeviceKernel("adaptive_avg_pool2d", x);
  }
  const rows = windows(h, oh);
  const cols = windows(w, ow);
  const y = new Float32Array(n * c * oh * ow);
  for (let nc = 0; nc < n * c; nc++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        const [r0, r1] = rows[i];
        const [c0, c1] = cols[j];
        let s = 0;
        for (let r = r0; r < r1; r++) for (let q = c0; q < c1; q++) s += x.data[(nc * h + r) * w + q];
        y[(nc * oh + i) * ow + j] = s / ((r1 - r0) * (c1 - c0));
      }
  return record(new Tensor(y, [n, c, oh, ow]), "adaptive_avg_pool2d", [x], (dy) => {
    const dx = new Float32Array(x.size);
    for (let nc = 0; nc < n * c; nc++)
      for (let i = 0; i < oh; i++)
        for (let j = 0; j < ow; j++) {
          const [r0, r1] = rows[i];
          const [c0, c1] = cols[j];
          const gv = dy[(nc * oh + i) * ow + j] / ((r1 - r0) * (c1 - c0));
          for (let r = r0; r < r1; r++) for (let q = c0; q < c1; q++) dx[(nc * h + r) * w + q] += gv;
        }
    return [dx];
  });
}

/** For ops that have no device kernel yet. */
export function noDeviceKernel(op: string, x: Tensor): Error {
  return new Error(`${op} has no ${x.device} kernel yet; run it on the host (await x.cpu())`);
}
