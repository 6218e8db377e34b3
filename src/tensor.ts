// Tensor: a contiguous float32 array with a shape (NCHW for images), an optional gradient, and the
// autograd node that produced it. Memory is a plain Float32Array owned by JavaScript.
// The top of the core's import order (shape < memory < autograd < tensor): autograd and memory work on
// the structural types they define (GradTensor, PoolTensor), which this class satisfies.
import { type GradNode, backward as runBackward } from "./autograd.js";
import { give, markExposed } from "./memory.js";
import { defaultGenerator, type Generator } from "./rng.js";
import { formatShape, type Shape, shapeSize } from "./shape.js";

export { formatShape, type Shape, shapeSize } from "./shape.js";

export interface TensorOptions {
  requiresGrad?: boolean;
}

function checkShape(shape: Shape): number[] {
  for (const d of shape)
    if (!Number.isInteger(d) || d < 0)
      throw new RangeError(`Expected a shape of non-negative integers but received ${formatShape(shape)}`);
  return [...shape];
}

export class Tensor {
  readonly data: Float32Array;
  readonly shape: number[];
  requiresGrad: boolean;
  private gradient: Tensor | null = null;
  /** The op that produced this tensor while recording; cleared by backward(). */
  node: GradNode | null = null;
  /**
   * Counts the in-place changes the library makes to `data` (initialisers, loadStateDict, optimiser
   * steps), as torch's `_version`; copies derived from the values (a Linear's prepacked weight) compare
   * it. Code that writes `data` itself calls markModified().
   */
  version = 0;

  constructor(data: Float32Array, shape: Shape, options: TensorOptions = {}) {
    this.shape = checkShape(shape);
    const size = shapeSize(this.shape);
    if (data.length !== size)
      throw new RangeError(
        `Expected ${size} values for shape ${formatShape(shape)} but received ${data.length}`,
      );
    this.data = data;
    this.requiresGrad = options.requiresGrad ?? false;
  }

  /**
   * Accumulated gradient (leaves only), same shape as the tensor. Reading it hands its memory to the
   * caller for good; otherwise zero_grad lets the next backward reuse it (see memory.ts).
   */
  get grad(): Tensor | null {
    if (this.gradient) markExposed(this.gradient);
    return this.gradient;
  }

  set grad(g: Tensor | null) {
    this.gradient = g;
  }

  /** The gradient, for library code that reads it and never keeps it (optimisers, checks). */
  peekGrad(): Tensor | null {
    return this.gradient;
  }

  /**
   * Adds g into the gradient (autograd's leaf step). A buffer the backward walk owns becomes the gradient
   * as it is (no 100 MB copies); a shared one (an op may hand the same buffer to several inputs, or pass
   * it through) is copied on first write.
   */
  accumulateGrad(g: Float32Array, owned: boolean): void {
    const grad = this.gradient;
    if (!grad) this.gradient = new Tensor(owned ? g : g.slice(), this.shape);
    else {
      const d = grad.data;
      for (let j = 0; j < d.length; j++) d[j] += g[j];
    }
  }

  /** Drops the gradient (zero_grad); its memory is reused when no caller has read it. */
  clearGrad(): void {
    if (this.gradient) give(this.gradient.data);
    this.gradient = null;
  }

  get size(): number {
    return this.data.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1)
      throw new RangeError(`item() expects a tensor with one element but it has ${this.size}`);
    return this.data[0];
  }

  toArray(): number[] {
    return Array.from(this.data);
  }

  /** Backpropagates from this tensor (a scalar, or with an explicit upstream gradient). */
  backward(gradient?: Tensor): void {
    runBackward(this, gradient);
  }

  /** Records an in-place change of `data` (bumps `version`) and returns this tensor. */
  markModified(): this {
    this.version++;
    return this;
  }

  /** A tensor sharing this one's data, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape);
  }

  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape, { requiresGrad: this.requiresGrad });
  }

  /** Sets requiresGrad in place and returns this tensor (as torch's requires_grad_). */
  requiresGrad_(flag = true): this {
    this.requiresGrad = flag;
    return this;
  }

  toString(): string {
    return `Tensor(shape=${formatShape(this.shape)}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}

/** A tensor that a Module owns and an optimiser updates; requiresGrad by default. */
export class Parameter extends Tensor {
  constructor(data: Float32Array, shape: Shape) {
    super(data, shape, { requiresGrad: true });
  }
}

export function zeros(shape: Shape, options?: TensorOptions): Tensor {
  return new Tensor(new Float32Array(shapeSize(checkShape(shape))), shape, options);
}

export function ones(shape: Shape, options?: TensorOptions): Tensor {
  return full(shape, 1, options);
}

export function full(shape: Shape, value: number, options?: TensorOptions): Tensor {
  return new Tensor(new Float32Array(shapeSize(checkShape(shape))).fill(value), shape, options);
}

/** Standard normal samples from the seeded generator. */
export function randn(shape: Shape, options?: TensorOptions & { generator?: Generator }): Tensor {
  const g = options?.generator ?? defaultGenerator;
  const data = new Float32Array(shapeSize(checkShape(shape)));
  for (let i = 0; i < data.length; i++) data[i] = g.normal();
  return new Tensor(data, shape, options);
}

/** Uniform samples in [0, 1) from the seeded generator. */
export function rand(shape: Shape, options?: TensorOptions & { generator?: Generator }): Tensor {
  const g = options?.generator ?? defaultGenerator;
  const data = new Float32Array(shapeSize(checkShape(shape)));
  for (let i = 0; i < data.length; i++) data[i] = g.random();
  return new Tensor(data, shape, options);
}

type Nested = number | readonly Nested[];

function inferShape(values: Nested): number[] {
  const shape: number[] = [];
  let v: Nested = values;
  while (Array.isArray(v)) {
    shape.push(v.length);
    v = (v as readonly Nested[])[0];
  }
  return shape;
}

/**
 * Builds a tensor from a (nested) array or a typed array. With a flat input, `shape` gives the shape;
 * with a nested array it is inferred and checked to be rectangular.
 */
export function fromArray(
  values: Nested | ArrayLike<number>,
  shape?: Shape,
  options?: TensorOptions,
): Tensor {
  if (typeof values === "number") return new Tensor(Float32Array.of(values), shape ?? [], options);
  const nested = Array.isArray(values) && values.some((v) => Array.isArray(v));
  if (!nested) {
    const flat = Float32Array.from(values as ArrayLike<number>);
    return new Tensor(flat, shape ?? [flat.length], options);
  }
  const inferred = inferShape(values as Nested);
  const flat = (values as unknown[]).flat(Number.POSITIVE_INFINITY) as number[];
  if (flat.length !== shapeSize(inferred))
    throw new RangeError(`Expected a rectangular nested array of shape ${formatShape(inferred)}`);
  const t = new Tensor(Float32Array.from(flat), inferred, options);
  return shape ? new Tensor(t.data, shape, options) : t;
}
