// Activations: relu (backward masks by the output) and dropout (seeded, inverted scaling).
import { record, recordDevice } from "../autograd.js";
import { backend } from "../backend/index.js";
import type { GpuStorage, WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import * as gpu from "../backend/webgpu/elementwise.js";
import { adopt, give, takeFloat32 } from "../memory.js";
import { defaultGenerator, type Generator } from "../rng.js";
import { Tensor } from "../tensor.js";
import { gpuArray, gpuOf, gradOn } from "./device.js";

// ReLU's backward fused into the next op. When an op's input x is a ReLU output (of `relu`, or of a conv
// or batch norm with `relu: true`), its backward kernel can apply ReLU's mask to the gradient it computes for x while
// the data is in cache (max-pool, conv's input gradient) and mark that buffer; the ReLU's backward then
// passes a marked gradient through instead of masking it again in a separate pass over a fresh buffer.
// The autograd hands a returned buffer only to that input x (a sum of several gradients is a new,
// unmarked buffer), so a mark is only ever seen by the ReLU that produced x.
const reluMasked = new WeakSet<Float32Array | GpuStorage>();

/** Whether t is the output of a ReLU (so a consumer may fuse ReLU's backward mask into its own). */
export function isReluOutput(t: Tensor): boolean {
  const op = t.node?.op;
  return op === "relu" || op === "conv2d+relu" || op === "batch_norm+relu";
}

/** Records that g, the gradient for a ReLU output, already has ReLU's backward mask applied. */
export function markReluMasked<G extends Float32Array | GpuStorage>(g: G): G {
  reluMasked.add(g);
  return g;
}

/** ReLU's backward: dy where y > 0 else 0; a gradient marked as already masked is passed through. */
export function reluGradient(dy: Float32Array, y: Float32Array): Float32Array {
  if (reluMasked.has(dy)) return dy;
  const dx = takeFloat32(dy.length);
  backend().reluBackward(dx, dy, y);
  return dx;
}

/** reluGradient on a device: a new storage, or dy itself when it is marked as masked already. */
export function reluGradientOnDevice(dev: WebGpuDevice, dy: GpuStorage, y: GpuStorage): GpuStorage {
  if (reluMasked.has(dy)) return dy;
  const dx = dev.alloc(dy.length);
  gpu.reluBackward(dev.ctx, dx.array, dy.array, y.array);
  return dx;
}

export function relu(x: Tensor): Tensor {
  const dev = gpuOf("relu", x);
  if (dev) {
    const y = dev.alloc(x.size);
    gpu.relu(dev.ctx, y.array, gpuArray(x));
    return recordDevice(new Tensor(y, x.shape), "relu", [x], (dy) => [
      reluGradientOnDevice(dev, gradOn(dev, dy), y),
    ]);
  }
  const y = takeFloat32(x.size);
  backend().relu(y, x.data);
  return record(adopt(new Tensor(y, x.shape)), "relu", [x], (dy) => [reluGradient(dy, y)]);
}

/** Rows [first, first + count) of a global batch of `total` rows (data-parallel training). */
export interface BatchShard {
  first: number;
  count: number;
  total: number;
}

let batchShard: BatchShard | null = null;

/**
 * While set, dropout over an input of `count` rows draws the masks of all `total` rows and keeps rows
 * [first, first + count): each process of a data-parallel run then drops what one process would drop
 * for the whole batch, and the generator advances the same on every process.
 */
export function setDropoutBatchShard(shard: BatchShard | null): void {
  batchShard = shard;
}

/**
 * Dropout: in training, zeroes each element with probability p and scales the rest by 1/(1-p), so the
 * expectation is unchanged; in evaluation it is the identity. The mask comes from the seeded generator.
 */
export function dropout(
  x: Tensor,
  p = 0.5,
  training = true,
  generator: Generator = defaultGenerator,
): Tensor {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`Expected a dropout probability in [0, 1] but received ${p}`);
  if (!training || p === 0) return x;
  const keep = p === 1 ? 0 : 1 / (1 - p);
  const dev = gpuOf("dropout", x);
  if (dev) return dropoutOnDevice(dev, x, p, keep, generator);
  const be = backend();
  const shard = batchShard && x.shape[0] === batchShard.count ? batchShard : null;
  const rowSize = x.size / x.shape[0];
  const drawn = takeFloat32(shard ? shard.total * rowSize : x.size);
  if (be.dropoutMask) be.dropoutMask(drawn, p, keep, generator.stateWords());
  else for (let i = 0; i < drawn.length; i++) drawn[i] = generator.random() >= p ? keep : 0;
  if (shard) drawn.copyWithin(0, shard.first * rowSize, (shard.first + shard.count) * rowSize);
  const mask = shard ? drawn.subarray(0, x.size) : drawn;
  const y = takeFloat32(x.size);
  backend().mul(y, x.data, mask);
  const out = record(adopt(new Tensor(y, x.shape)), "dropout", [x], (dy) => {
    const dx = takeFloat32(dy.length);
    backend().mul(dx, dy, mask);
    give(drawn);
    return [dx];
  });
  if (!out.node) give(drawn);
  return out;
}

/** Dropout of a tensor on a device: the mask from the generator's stream, draw for draw the host's. */
function dropoutOnDevice(
  dev: WebGpuDevice,
  x: Tensor,
  p: number,
  keep: number,
  generator: Generator,
): Tensor {
  if (batchShard && x.shape[0] === batchShard.count)
    throw new Error("Data-parallel dropout (setDropoutBatchShard) has no WebGPU path");
  const mask = dev.alloc(x.size);
  gpu.dropoutMask(dev.ctx, mask.array, p, keep, generator.stateWords());
  const y = dev.alloc(x.size);
  gpu.mul(dev.ctx, y.array, gpuArray(x), mask.array);
  const out = recordDevice(new Tensor(y, x.shape), "dropout", [x], (dy) => {
    const dx = dev.alloc(dy.length);
    gpu.mul(dev.ctx, dx.array, gradOn(dev, dy).array, mask.array);
    mask.release();
    return [dx];
  });
  if (!out.node) mask.release();
  return out;
}
