// Element-wise arithmetic and reductions: add, sub, mul (tensor or scalar), sum and mean over all elements.
import { record } from "../autograd.js";
import { backend } from "../backend/index.js";
import { Tensor } from "../tensor.js";
import { noDeviceKernel } from "./pool.js";
import { expectSameShape } from "./util.js";

/** These ops have no device kernels yet: a clear error instead of `.data`'s. */
function hostOnly(op: string, ...ts: (Tensor | number)[]): void {
  for (const t of ts) if (typeof t !== "number" && t.deviceStorage) throw noDeviceKernel(op, t);
}

function scale(a: Float32Array, s: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] * s;
  return out;
}

/** a + b (same shapes), or a + scalar. */
export function add(a: Tensor, b: Tensor | number): Tensor {
  hostOnly("add", a, b);
  if (typeof b === "number") {
    const out = new Float32Array(a.size);
    for (let i = 0; i < out.length; i++) out[i] = a.data[i] + b;
    return record(new Tensor(out, a.shape), "add", [a], (g) => [g]);
  }
  expectSameShape(a, b, "add");
  const out = a.data.slice();
  backend().addInPlace(out, b.data);
  return record(new Tensor(out, a.shape), "add", [a, b], (g) => [g, g]);
}

/** a - b (same shapes). */
export function sub(a: Tensor, b: Tensor): Tensor {
  hostOnly("sub", a, b);
  expectSameShape(a, b, "sub");
  const out = new Float32Array(a.size);
  for (let i = 0; i < out.length; i++) out[i] = a.data[i] - b.data[i];
  return record(new Tensor(out, a.shape), "sub", [a, b], (g) => [g, scale(g, -1)]);
}

/** a * b element-wise (same shapes), or a * scalar. */
export function mul(a: Tensor, b: Tensor | number): Tensor {
  hostOnly("mul", a, b);
  if (typeof b === "number")
    return record(new Tensor(scale(a.data, b), a.shape), "mul", [a], (g) => [scale(g, b)]);
  expectSameShape(a, b, "mul");
  const out = new Float32Array(a.size);
  backend().mul(out, a.data, b.data);
  return record(new Tensor(out, a.shape), "mul", [a, b], (g) => {
    const ga = new Float32Array(g.length);
    const gb = new Float32Array(g.length);
    backend().mul(ga, g, b.data);
    backend().mul(gb, g, a.data);
    return [ga, gb];
  });
}

/** Sum of all elements, a scalar tensor (accumulated in float64). */
export function sum(a: Tensor): Tensor {
  hostOnly("sum", a);
  let s = 0;
  for (let i = 0; i < a.size; i++) s += a.data[i];
  return record(new Tensor(Float32Array.of(s), []), "sum", [a], (g) => [new Float32Array(a.size).fill(g[0])]);
}

/** Mean of all elements, a scalar tensor. */
export function mean(a: Tensor): Tensor {
  hostOnly("mean", a);
  if (a.size === 0) throw new RangeError("Expected a non-empty tensor for mean but received 0 elements");
  let s = 0;
  for (let i = 0; i < a.size; i++) s += a.data[i];
  const n = a.size;
  return record(new Tensor(Float32Array.of(s / n), []), "mean", [a], (g) => [
    new Float32Array(n).fill(g[0] / n),
  ]);
}
