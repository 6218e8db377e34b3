// conv2d + ReLU + max_pool2d as one op, forward beside backward: the last layers of every VGG block.
//
// Unfused, the conv's output is the largest tensor of the network (16 x 224 x 224 floats per image in
// the d2l model's first block, 411 MB at batch 128), written once, read by the pool, kept for backward,
// and matched by a gradient of the same size. Here the batch goes through in chunks of a few images: the
// conv writes a chunk into a small scratch buffer that stays in cache, the pool reads it back from there,
// and only the pooled output and its argmax are kept. Backward rebuilds the chunk's conv gradient (the
// pooled gradient scattered to the argmax, ReLU's mask fused) in the same scratch and runs both conv
// gradients on it. The result equals maxPool2d(conv2d(x, w, b, {relu: true})); the weight gradient is
// summed chunk by chunk, so it agrees with the unfused one to float rounding. Where the backend has a
// kernel that pools in the convolution's epilogue (the native Winograd kernels), the forward pass uses it
// and no chunk of the convolution's output is ever written.
import { record, recordDevice } from "../autograd.js";
import type { Conv2dGeometry, Pool2dGeometry } from "../backend/backend.js";
import { backend } from "../backend/index.js";
import * as gpuConv from "../backend/webgpu/conv2d.js";
import type { WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import * as gpuPool from "../backend/webgpu/pool.js";
import { adopt, give, takeFloat32, takeInt32 } from "../memory.js";
import { formatShape, Tensor } from "../tensor.js";
import { isReluOutput, markReluMasked } from "./activation.js";
import { type Conv2dOptions, conv2dGeometry } from "./conv2d.js";
import { gpuArray, gpuOf, gradOn } from "./device.js";
import { type MaxPool2dOptions, maxPool2dGeometry } from "./pool.js";

/** Bytes of conv output per chunk: a few MB, so a chunk stays in the last-level cache. */
const CHUNK_BYTES = 4 * 1024 * 1024;

/** Images per chunk: a multiple of the thread count (the conv kernels split a chunk's images over them). */
function chunkImages(g: Conv2dGeometry): number {
  const threads = backend().numThreads();
  const perImage = g.cOut * g.outH * g.outW * 4;
  const k = Math.max(1, Math.floor(CHUNK_BYTES / perImage / threads)) * threads;
  return Math.min(k, g.n);
}

/**
 * maxPool2d(relu(conv2d(x, weight, bias))) in one pass over chunks of the batch. `imagesPerChunk`
 * overrides the chunk size (tests use it to exercise uneven chunks).
 */
export function conv2dReluMaxPool2d(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  conv: Omit<Conv2dOptions, "relu">,
  pool: MaxPool2dOptions,
  imagesPerChunk?: number,
): Tensor {
  const g = conv2dGeometry(x.shape, weight.shape, conv);
  if (bias && (bias.ndim !== 1 || bias.size !== g.cOut))
    throw new RangeError(
      `Expected a bias of shape [${g.cOut}] for conv2d but received ${formatShape(bias.shape)}`,
    );
  const pg = maxPool2dGeometry([g.n, g.cOut, g.outH, g.outW], pool);
  const dev = gpuOf("conv2d", x, [
    ["weight", weight],
    ["bias", bias],
  ]);
  if (dev) return onDevice(dev, x, weight, bias, g, pg);
  const be = backend();
  if (imagesPerChunk !== undefined && !(Number.isInteger(imagesPerChunk) && imagesPerChunk >= 1))
    throw new RangeError(`Expected imagesPerChunk to be an integer >= 1 but received ${imagesPerChunk}`);
  const k = Math.min(imagesPerChunk ?? chunkImages(g), Math.max(g.n, 1));
  const xImage = g.cIn * g.h * g.w;
  const convImage = g.cOut * g.outH * g.outW;
  const poolImage = g.cOut * pg.outH * pg.outW;
  const y = takeFloat32(g.n * poolImage);
  const argmax = takeInt32(g.n * poolImage);
  const b = bias ? bias.data : null;
  // A backend kernel that pools in the convolution's epilogue, where it has one for this geometry.
  const vggWindow =
    pg.kh === 2 && pg.kw === 2 && pg.strideH === 2 && pg.strideW === 2 && pg.padH === 0 && pg.padW === 0;
  const fused =
    vggWindow &&
    imagesPerChunk === undefined &&
    g.n > 0 &&
    (be.conv2dReluMaxPool2dForward?.(y, argmax, x.data, weight.data, b, g) ?? false);
  if (!fused) {
    const scratch = takeFloat32(k * convImage);
    for (let n0 = 0; n0 < g.n; n0 += k) {
      const m = Math.min(k, g.n - n0);
      const conv = scratch.subarray(0, m * convImage);
      be.conv2dForward(
        conv,
        x.data.subarray(n0 * xImage, (n0 + m) * xImage),
        weight.data,
        b,
        { ...g, n: m },
        true,
      );
      be.maxPool2dForward(
        y.subarray(n0 * poolImage, (n0 + m) * poolImage),
        argmax.subarray(n0 * poolImage, (n0 + m) * poolImage),
        conv,
        { ...pg, n: m },
      );
    }
    give(scratch);
  }
  const inputs = bias ? [x, weight, bias] : [x, weight];
  // When x is itself a ReLU output, that ReLU's backward is fused into the input gradient (see activation.ts).
  const reluMask = isReluOutput(x) ? x.data : null;
  const out = record(
    adopt(new Tensor(y, [g.n, g.cOut, pg.outH, pg.outW])),
    "conv2d+relu+max_pool2d",
    inputs,
    (dy) => {
      const dx = x.requiresGrad ? takeFloat32(x.size) : null;
      const wantW = weight.requiresGrad || (bias?.requiresGrad ?? false);
      const dw = wantW ? new Float32Array(weight.size) : null;
      const db = wantW && bias ? new Float32Array(g.cOut) : null;
      // A backend kernel that takes the weight gradient straight from the pooled one (a first layer,
      // whose input needs no gradient), where it has one for this geometry.
      if (
        !dx &&
        dw &&
        vggWindow &&
        imagesPerChunk === undefined &&
        (be.conv2dReluMaxPool2dBackwardWeight?.(dw, db, dy, argmax, y, x.data, g) ?? false)
      ) {
        give(argmax);
        return bias ? [dx, dw, db] : [dx, dw];
      }
      // The first chunk's weight gradient goes straight to dw; later ones are added to it.
      const chunked = g.n > k;
      const dwChunk = wantW && chunked ? new Float32Array(weight.size) : null;
      const dbChunk = db && chunked ? new Float32Array(g.cOut) : null;
      const dconv = takeFloat32(k * convImage);
      for (let n0 = 0; n0 < g.n; n0 += k) {
        const m = Math.min(k, g.n - n0);
        const d = dconv.subarray(0, m * convImage);
        const poolRange = [n0 * poolImage, (n0 + m) * poolImage] as const;
        // The pooled gradient scattered to each window's max; windows whose max is not > 0 pass nothing
        // (ReLU's backward: the conv output there was not positive).
        be.maxPool2dBackward(
          d,
          dy.subarray(...poolRange),
          argmax.subarray(...poolRange),
          { ...pg, n: m },
          y.subarray(...poolRange),
        );
        const gm = { ...g, n: m };
        const xm = x.data.subarray(n0 * xImage, (n0 + m) * xImage);
        if (dx)
          be.conv2dBackwardInput(
            dx.subarray(n0 * xImage, (n0 + m) * xImage),
            d,
            weight.data,
            gm,
            reluMask ? reluMask.subarray(n0 * xImage, (n0 + m) * xImage) : null,
          );
        if (dw && n0 === 0) be.conv2dBackwardWeight(dw, db, d, xm, gm);
        else if (dw && dwChunk) {
          be.conv2dBackwardWeight(dwChunk, dbChunk, d, xm, gm);
          be.addInPlace(dw, dwChunk);
          if (db && dbChunk) be.addInPlace(db, dbChunk);
        }
      }
      give(dconv);
      give(argmax);
      if (dx && reluMask) markReluMasked(dx);
      return bias ? [dx, dw, db] : [dx, dw];
    },
  );
  if (!out.node) give(argmax);
  return out;
}

/**
 * The fused op on a WebGPU device: the convolution's output is written whole (a GPU has the memory
 * bandwidth; the chunks above are for CPU caches) and freed once pooled; backward as above.
 */
function onDevice(
  dev: WebGpuDevice,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  g: Conv2dGeometry,
  pg: Pool2dGeometry,
): Tensor {
  const ctx = dev.ctx;
  const conv = dev.alloc(g.n * g.cOut * g.outH * g.outW);
  gpuConv.conv2dForward(
    ctx,
    conv.array,
    gpuArray(x),
    gpuArray(weight),
    bias ? gpuArray(bias) : null,
    g,
    true,
  );
  const size = g.n * g.cOut * pg.outH * pg.outW;
  const y = dev.alloc(size);
  const argmax = dev.alloc(size, "i32");
  gpuPool.maxPool2dForward(ctx, y.array, argmax.array, conv.array, pg);
  conv.release();
  const inputs = bias ? [x, weight, bias] : [x, weight];
  const fuseMask = isReluOutput(x);
  const out = recordDevice(
    new Tensor(y, [g.n, g.cOut, pg.outH, pg.outW]),
    "conv2d+relu+max_pool2d",
    inputs,
    (dyIn) => {
      const dy = gradOn(dev, dyIn);
      const d = dev.alloc(g.n * g.cOut * g.outH * g.outW);
      gpuPool.maxPool2dBackward(ctx, d.array, dy.array, argmax.array, pg, y.array);
      argmax.release();
      const dx = x.requiresGrad ? dev.alloc(x.size) : null;
      if (dx)
        gpuConv.conv2dBackwardInput(
          ctx,
          dx.array,
          d.array,
          gpuArray(weight),
          g,
          fuseMask ? gpuArray(x) : null,
        );
      if (dx && fuseMask) markReluMasked(dx);
      const wantW = weight.requiresGrad || (bias?.requiresGrad ?? false);
      const dw = wantW ? dev.alloc(weight.size) : null;
      const db = wantW && bias ? dev.alloc(g.cOut) : null;
      if (dw) gpuConv.conv2dBackwardWeight(ctx, dw.array, db ? db.array : null, d.array, gpuArray(x), g);
      d.release();
      return bias ? [dx, dw, db] : [dx, dw];
    },
  );
  if (!out.node) argmax.release();
  return out;
}
