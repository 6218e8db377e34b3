// Shape ops: reshape and flatten share the data buffer (tensors are contiguous), so both are free.
import { record, recordDevice } from "../autograd.js";
import { formatShape, shapeSize, Tensor } from "../tensor.js";

/** Reshape to `shape`; one dimension may be -1 and is inferred. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const out = [...shape];
  const infer = out.indexOf(-1);
  if (infer >= 0) {
    const known = shapeSize(out.filter((_, i) => i !== infer));
    if (known === 0 || x.size % known !== 0)
      throw new RangeError(
        `Cannot reshape ${formatShape(x.shape)} (${x.size} values) into ${formatShape(shape)}`,
      );
    out[infer] = x.size / known;
  }
  if (shapeSize(out) !== x.size || out.some((d) => !Number.isInteger(d) || d < 0))
    throw new RangeError(
      `Expected a shape with ${x.size} values to reshape ${formatShape(x.shape)} but received ${formatShape(shape)}`,
    );
  if (x.deviceStorage) return recordDevice(new Tensor(x.deviceStorage, out), "reshape", [x], (g) => [g]);
  return record(new Tensor(x.data, out), "reshape", [x], (g) => [g]);
}

/** Flattens dimensions startDim..endDim into one (torch.flatten; nn.Flatten uses startDim 1). */
export function flatten(x: Tensor, startDim = 1, endDim = -1): Tensor {
  return reshape(x, flattenShape(x.shape, startDim, endDim));
}

/** The shape flatten() produces. */
export function flattenShape(input: readonly number[], startDim = 1, endDim = -1): number[] {
  const nd = input.length;
  const s = startDim < 0 ? startDim + nd : startDim;
  const e = endDim < 0 ? endDim + nd : endDim;
  if (s < 0 || e >= nd || s > e)
    throw new RangeError(
      `Expected flatten dims in range for a ${nd}-d tensor ${formatShape(input)} but received (${startDim}, ${endDim})`,
    );
  return [...input.slice(0, s), shapeSize(input.slice(s, e + 1)), ...input.slice(e + 1)];
}
