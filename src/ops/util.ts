// Small helpers shared by the ops: argument pairs and shape checks with readable messages.
import { formatShape, type Tensor } from "../tensor.js";

export type Pair = number | readonly [number, number];

export function pair(v: Pair, what: string): [number, number] {
  const p: [number, number] = typeof v === "number" ? [v, v] : [v[0], v[1]];
  if (!Number.isInteger(p[0]) || !Number.isInteger(p[1]))
    throw new RangeError(`Expected ${what} to be an integer or a pair of integers but received ${String(v)}`);
  return p;
}

export function expectNdim(t: Tensor, ndim: number, op: string, pattern: string): void {
  if (t.ndim !== ndim)
    throw new RangeError(`Expected input of shape ${pattern} for ${op} but received ${formatShape(t.shape)}`);
}

export function expectSameShape(a: Tensor, b: Tensor, op: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i]))
    throw new RangeError(
      `Expected tensors of the same shape for ${op} but received ${formatShape(a.shape)} and ${formatShape(b.shape)}`,
    );
}
