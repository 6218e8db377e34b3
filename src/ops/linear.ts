// linear (y = x W^T + b) and matmul, both one GEMM forward and two backward.
import { needsGrad, record, recordDevice } from "../autograd.js";
import type { Backend } from "../backend/backend.js";
import { backend } from "../backend/index.js";
import type { WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import { addRowBias } from "../backend/webgpu/elementwise.js";
import { gemm } from "../backend/webgpu/gemm.js";
import { adopt, takeFloat32 } from "../memory.js";
import { formatShape, Tensor } from "../tensor.js";
import { gpuArray, gpuOf, gradOn } from "./device.js";
import { noDeviceKernel } from "./pool.js";

/** Matrix product of a (m, k) and b (k, n). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== b.shape[0])
    throw new RangeError(
      `Expected matrices of shapes [m, k] and [k, n] for matmul but received ${formatShape(a.shape)} and ${formatShape(b.shape)}`,
    );
  if (a.deviceStorage || b.deviceStorage) throw noDeviceKernel("matmul", a.deviceStorage ? a : b);
  const [m, k] = a.shape;
  const n = b.shape[1];
  const c = new Float32Array(m * n);
  backend().gemm(c, a.data, b.data, m, n, k, false, false, 0);
  return record(new Tensor(c, [m, n]), "matmul", [a, b], (g) => {
    let da: Float32Array | null = null;
    let db: Float32Array | null = null;
    if (a.requiresGrad) backend().gemm((da = new Float32Array(m * k)), g, b.data, m, k, n, false, true, 0);
    if (b.requiresGrad) backend().gemm((db = new Float32Array(k * n)), a.data, g, k, n, m, true, false, 0);
    return [da, db];
  });
}

/** A Linear weight packed once into the backend's GEMM layout (see packLinearWeight). */
export interface PackedLinearWeight {
  readonly packed: Float32Array;
  /** What it was packed from: the weight's array, its version and the backend. */
  readonly source: Float32Array;
  readonly version: number;
  readonly backend: Backend;
}

/**
 * The weight (out, in) packed for the backend's gemmPackedB, as onnxruntime packs constant weights
 * when a session starts; `previous` is returned as it is while it was packed from the same array at the
 * same version on the same backend. Null when the backend has no packed GEMM.
 */
export function packLinearWeight(
  weight: Tensor,
  previous: PackedLinearWeight | null = null,
): PackedLinearWeight | null {
  const be = backend();
  if (!be.gemmPackB || !be.gemmPackedB || weight.ndim !== 2) return null;
  if (
    previous &&
    previous.source === weight.data &&
    previous.version === weight.version &&
    previous.backend === be
  )
    return previous;
  const [out, inF] = weight.shape;
  return {
    packed: be.gemmPackB(weight.data, out, inF, true),
    source: weight.data,
    version: weight.version,
    backend: be,
  };
}

/** Whether `packed` still holds `weight`'s current values for the current backend. */
function packedIsCurrent(weight: Tensor, packed: PackedLinearWeight): boolean {
  return packed.source === weight.data && packed.version === weight.version && packed.backend === backend();
}

/**
 * Fully connected layer: x (..., in) times weight (out, in) transposed, plus bias (out).
 * Backward: dx = dy W, dW = dy^T x, db = sum of dy over rows.
 * `packed` (from packLinearWeight) is used, for the same values bit for bit, where nothing needs a
 * gradient, the batch has more than 4 rows (fewer run as a matrix-vector product that reads the weight
 * directly) and it still matches the weight.
 */
export function linear(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null = null,
  packed: PackedLinearWeight | null = null,
): Tensor {
  if (weight.ndim !== 2)
    throw new RangeError(`Expected a weight of shape [out, in] but received ${formatShape(weight.shape)}`);
  const [out, inF] = weight.shape;
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== inF)
    throw new RangeError(
      `Expected input of shape [N, ${inF}] for Linear(${inF}, ${out}) but received ${formatShape(x.shape)}`,
    );
  if (bias && (bias.ndim !== 1 || bias.size !== out))
    throw new RangeError(
      `Expected a bias of shape [${out}] for Linear(${inF}, ${out}) but received ${formatShape(bias.shape)}`,
    );
  const rows = x.size / inF;
  const dev = gpuOf(`Linear(${inF}, ${out})`, x, [
    ["weight", weight],
    ["bias", bias],
  ]);
  if (dev) return linearOnDevice(dev, x, weight, bias, rows);
  // gemm with beta 0 writes every element, so the output may come from the buffer pool (memory.ts).
  const y = takeFloat32(rows * out);
  const be = backend();
  if (packed && rows > 4 && be.gemmPackedB && !needsGrad(x, weight, bias) && packedIsCurrent(weight, packed))
    be.gemmPackedB(y, x.data, packed.packed, rows, out, inF, 0);
  else be.gemm(y, x.data, weight.data, rows, out, inF, false, true, 0);
  if (bias) backend().addRowBias(y, bias.data, rows, out);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return record(adopt(new Tensor(y, [...x.shape.slice(0, -1), out])), "linear", inputs, (dy) => {
    let dx: Float32Array | null = null;
    let dw: Float32Array | null = null;
    if (x.requiresGrad)
      backend().gemm((dx = takeFloat32(x.size)), dy, weight.data, rows, inF, out, false, false, 0);
    if (weight.requiresGrad)
      backend().gemm((dw = takeFloat32(weight.size)), dy, x.data, out, inF, rows, true, false, 0);
    if (!bias) return [dx, dw];
    // db = the column sums of dy, as the product ones (1, rows) x dy (rows, out).
    const db = new Float32Array(out);
    backend().gemm(db, new Float32Array(rows).fill(1), dy, 1, out, rows, false, false, 0);
    return [dx, dw, db];
  });
}

/** linear of tensors on a WebGPU device: the same three GEMMs (and the bias as a GEMM with ones). */
function linearOnDevice(
  dev: WebGpuDevice,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  rows: number,
): Tensor {
  const [out, inF] = weight.shape;
  const ctx = dev.ctx;
  const y = dev.alloc(rows * out);
  gemm(ctx, y.array, gpuArray(x), gpuArray(weight), rows, out, inF, false, true, 0);
  if (bias) addRowBias(ctx, y.array, gpuArray(bias), rows, out);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return recordDevice(new Tensor(y, [...x.shape.slice(0, -1), out]), "linear", inputs, (dyIn) => {
    const dy = gradOn(dev, dyIn).array;
    const dx = x.requiresGrad ? dev.alloc(x.size) : null;
    if (dx) gemm(ctx, dx.array, dy, gpuArray(weight), rows, inF, out, false, false, 0);
    const dw = weight.requiresGrad ? dev.alloc(weight.size) : null;
    if (dw) gemm(ctx, dw.array, dy, gpuArray(x), out, inF, rows, true, false, 0);
    if (!bias) return [dx, dw];
    const db = dev.alloc(out);
    gemm(ctx, db.array, dev.ones(rows).array, dy, 1, out, rows, false, false, 0);
    return [dx, dw, db];
  });
}
