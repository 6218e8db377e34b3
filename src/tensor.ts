// Tensor: a contiguous float32 array with a shape (NCHW for images), an optional gradient, and the
// autograd node that produced it. Memory is a plain Float32Array owned by JavaScript, or, for a tensor
// on a device (device.ts), that device's storage: its values are read explicitly and asynchronously
// (toArrayAsync, itemAsync, dataAsync), and `data` throws saying so.
// The top of the core's import order (shape < memory < device < autograd < tensor): autograd and memory work on
// the structural types they define (GradTensor, PoolTensor), which this class satisfies.
import { type GradBuffer, type GradNode, backward as runBackward } from "./autograd.js";
import { currentDevice, type Device, type DeviceName, type DeviceStorage } from "./device.js";
import { give, markExposed, markInternal, releaseInternal } from "./memory.js";
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

/** The tensor that owns each device storage (the op output it was made for); views are not owners. */
const deviceOwners = new WeakMap<DeviceStorage, Tensor>();
/** Device tensors a Sequential produced and did not return (memory.ts keeps the host ones). */
const deviceInternal = new WeakSet<Tensor>();

export class Tensor {
  private host: Float32Array | null;
  private onDevice: DeviceStorage | null;
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

  constructor(data: Float32Array | DeviceStorage, shape: Shape, options: TensorOptions = {}) {
    this.shape = checkShape(shape);
    const size = shapeSize(this.shape);
    if (data.length !== size)
      throw new RangeError(
        `Expected ${size} values for shape ${formatShape(shape)} but received ${data.length}`,
      );
    if (data instanceof Float32Array) {
      this.host = data;
      this.onDevice = null;
    } else {
      this.host = null;
      this.onDevice = data;
      if (!deviceOwners.has(data)) deviceOwners.set(data, this);
    }
    this.requiresGrad = options.requiresGrad ?? false;
  }

  /** The values in host memory. A tensor on a device has none there: reading them is asynchronous. */
  get data(): Float32Array {
    const h = this.host;
    if (h) return h;
    throw new Error(
      `${this.toString()} lives on ${this.device}, so its values are not in host memory; read them with ` +
        "await t.toArrayAsync(), await t.dataAsync() or await t.itemAsync(), or copy it with await t.cpu()",
    );
  }

  /** Where the values live: "cpu" (host memory) or a device's name. */
  get device(): DeviceName {
    return this.onDevice ? this.onDevice.device.name : "cpu";
  }

  /** The device storage of a tensor on a device (null on the host), for ops and optimisers. */
  get deviceStorage(): DeviceStorage | null {
    return this.onDevice;
  }

  /** The values wherever they are: the host array or the device storage. */
  get storage(): Float32Array | DeviceStorage {
    return this.host ?? (this.onDevice as DeviceStorage);
  }

  /**
   * Accumulated gradient (leaves only), same shape as the tensor. Reading it hands its memory to the
   * caller for good; otherwise zero_grad lets the next backward reuse it (see memory.ts).
   */
  get grad(): Tensor | null {
    if (this.gradient) this.gradient.markExposed();
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
  accumulateGrad(g: GradBuffer, owned: boolean): void {
    const grad = this.gradient;
    if (!grad) {
      this.gradient = new Tensor(owned ? g : g instanceof Float32Array ? g.slice() : g.clone(), this.shape);
      return;
    }
    const into = grad.storage;
    if (into instanceof Float32Array && g instanceof Float32Array)
      for (let j = 0; j < into.length; j++) into[j] += g[j];
    else if (!(into instanceof Float32Array) && !(g instanceof Float32Array)) into.addInPlace(g);
    else throw new Error(`Expected a gradient on ${this.device} for ${this.toString()}`);
  }

  /** Drops the gradient (zero_grad); its memory is reused when no caller has read it. */
  clearGrad(): void {
    const g = this.gradient;
    if (g) {
      if (g.onDevice) g.onDevice.release();
      else give(g.data);
    }
    this.gradient = null;
  }

  get size(): number {
    return this.storage.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The single value of a one-element tensor on the host (itemAsync reads it from a device). */
  item(): number {
    if (this.size !== 1)
      throw new RangeError(`item() expects a tensor with one element but it has ${this.size}`);
    return this.data[0];
  }

  /** The single value of a one-element tensor, wherever it lives. */
  async itemAsync(): Promise<number> {
    if (this.size !== 1)
      throw new RangeError(`itemAsync() expects a tensor with one element but it has ${this.size}`);
    return (await this.dataAsync())[0];
  }

  toArray(): number[] {
    return Array.from(this.data);
  }

  /** The values as numbers, wherever they live. */
  async toArrayAsync(): Promise<number[]> {
    return Array.from(await this.dataAsync());
  }

  /** A copy of the values in host memory, once the device (if any) has run the work queued before. */
  async dataAsync(): Promise<Float32Array> {
    return this.onDevice ? this.onDevice.read() : (this.host as Float32Array).slice();
  }

  /**
   * This tensor on `device` (itself when it is there already): a copy cut from the graph. To the host,
   * use `await t.cpu()`, since reading a device is asynchronous.
   */
  to(device: DeviceName): Tensor {
    if (device === this.device) return this;
    if (device === "cpu")
      throw new Error(`${this.toString()} lives on ${this.device}: copy it to the host with await t.cpu()`);
    return new Tensor(deviceNamed(device).upload(this.data), this.shape);
  }

  /** A copy on the host (this tensor itself when it is there). */
  async cpu(): Promise<Tensor> {
    if (!this.onDevice) return this;
    return new Tensor(await this.onDevice.read(), this.shape);
  }

  /**
   * Moves the values to `device` in place, keeping the tensor's identity (Module.to, so optimisers keep
   * their parameters); the gradient is dropped. Returns this tensor.
   */
  moveTo_(device: Device): this {
    if (this.onDevice?.device === device) return this;
    const values = this.host ?? null;
    if (!values) throw new Error(`${this.toString()} lives on ${this.device}: move it to the host first`);
    this.clearGrad();
    this.onDevice = device.upload(values);
    deviceOwners.set(this.onDevice, this);
    this.host = null;
    return this;
  }

  /** Brings the values back to host memory in place (the reverse of moveTo_). Returns this tensor. */
  async moveToHost_(): Promise<this> {
    const d = this.onDevice;
    if (!d) return this;
    const values = await d.read();
    this.clearGrad();
    this.host = values;
    this.onDevice = null;
    d.release();
    return this;
  }

  /** Overwrites the values from host memory, wherever they live (loadStateDict). */
  copyFrom_(values: Float32Array): this {
    if (values.length !== this.size)
      throw new RangeError(
        `Expected ${this.size} values for ${this.toString()} but received ${values.length}`,
      );
    if (this.onDevice) this.onDevice.write(values);
    else (this.host as Float32Array).set(values);
    return this.markModified();
  }

  /** Backpropagates from this tensor (a scalar, or with an explicit upstream gradient). */
  backward(gradient?: Tensor): void {
    const d = this.onDevice?.device;
    runBackward(
      this,
      gradient ? { data: gradient.storage, shape: gradient.shape } : undefined,
      {},
      d ? () => d.full(1, 1) : undefined,
    );
  }

  /** Marks a tensor a Sequential produced and consumed itself (its memory may be reused, memory.ts). */
  markInternal(): void {
    if (this.onDevice) deviceInternal.add(this);
    else markInternal(this);
  }

  /** Marks a tensor handed to a caller: its memory is never reused. */
  markExposed(): void {
    if (this.onDevice) this.onDevice.expose();
    else markExposed(this);
  }

  /** Frees an internal tensor's memory when it owns it and nothing else can read it (memory.ts). */
  releaseInternal(): void {
    const d = this.onDevice;
    if (!d) releaseInternal(this);
    else if (deviceInternal.has(this) && deviceOwners.get(d) === this) d.release();
  }

  /** Whether the two tensors share memory (a reshape is a view). */
  sharesMemoryWith(other: Tensor): boolean {
    const a = this.storage;
    const b = other.storage;
    if (a instanceof Float32Array) return b instanceof Float32Array && a.buffer === b.buffer;
    return a === b;
  }

  /** Records an in-place change of `data` (bumps `version`) and returns this tensor. */
  markModified(): this {
    this.version++;
    return this;
  }

  /** A tensor sharing this one's data, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.storage, this.shape);
  }

  clone(): Tensor {
    const s = this.storage;
    return new Tensor(s instanceof Float32Array ? s.slice() : s.clone(), this.shape, {
      requiresGrad: this.requiresGrad,
    });
  }

  /** Sets requiresGrad in place and returns this tensor (as torch's requires_grad_). */
  requiresGrad_(flag = true): this {
    this.requiresGrad = flag;
    return this;
  }

  toString(): string {
    const where = this.onDevice ? `, device=${this.device}` : "";
    return `Tensor(shape=${formatShape(this.shape)}${where}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}

/** The current device, which must be the one named. */
export function deviceNamed(name: Exclude<DeviceName, "cpu">): Device {
  const d = currentDevice();
  if (!d || d.name !== name)
    throw new Error(`No ${name} device is open; call await useBackend("${name}") first`);
  return d;
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
