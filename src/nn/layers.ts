// The layers, named as in PyTorch. Each forward is a line or two over the functional ops.

import { isGradEnabled } from "../autograd.js";
import { dropout, relu } from "../ops/activation.js";
import { batchNorm } from "../ops/batchnorm.js";
import { conv2dReluMaxPool2d } from "../ops/conv-relu-pool.js";
import { conv2d, conv2dGeometry } from "../ops/conv2d.js";
import { linear, type PackedLinearWeight, packLinearWeight } from "../ops/linear.js";
import { adaptiveAvgPool2d, maxPool2d, maxPool2dGeometry } from "../ops/pool.js";
import { flatten, flattenShape } from "../ops/shape.js";
import type { Pair } from "../ops/util.js";
import { pair } from "../ops/util.js";
import { formatShape, ones, Parameter, type Tensor, zeros } from "../tensor.js";
import { kaimingUniform_, uniform_ } from "./init.js";
import { Module } from "./module.js";

function positiveInt(v: number, what: string, layer: string): number {
  if (!Number.isInteger(v) || v < 1)
    throw new RangeError(`Expected ${what} to be a positive integer for ${layer} but received ${v}`);
  return v;
}

/** PyTorch's default for Conv2d and Linear: kaiming_uniform(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias. */
function resetLinearLike(weight: Parameter, bias: Parameter | null, fanIn: number): void {
  kaimingUniform_(weight, { a: Math.sqrt(5) });
  if (bias) {
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    uniform_(bias, -bound, bound);
  }
}

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair;
  bias?: boolean;
}

export class Conv2d extends Module {
  weight: Parameter;
  bias: Parameter | null;
  readonly kernelSize: [number, number];
  readonly stride: Pair;
  readonly padding: Pair;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    kernelSize: Pair,
    options: Conv2dOptions = {},
  ) {
    super();
    const name = `Conv2d(${inChannels}, ${outChannels})`;
    positiveInt(inChannels, "inChannels", name);
    positiveInt(outChannels, "outChannels", name);
    this.kernelSize = pair(kernelSize, "kernelSize");
    this.stride = options.stride ?? 1;
    this.padding = options.padding ?? 0;
    const [kh, kw] = this.kernelSize;
    this.weight = new Parameter(new Float32Array(outChannels * inChannels * kh * kw), [
      outChannels,
      inChannels,
      kh,
      kw,
    ]);
    this.bias = (options.bias ?? true) ? new Parameter(new Float32Array(outChannels), [outChannels]) : null;
    resetLinearLike(this.weight, this.bias, inChannels * kh * kw);
  }

  forward(x: Tensor): Tensor {
    this.checkInput(x);
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding });
  }

  /** Fused conv2d + ReLU (one pass over the output); equal to ReLU(Conv2d(x)). */
  forwardRelu(x: Tensor): Tensor {
    this.checkInput(x);
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding, relu: true });
  }

  /** Fused conv2d + ReLU + max-pool (pooled chunk by chunk); equal to pool(ReLU(Conv2d(x))). */
  forwardReluPool(x: Tensor, pool: MaxPool2d): Tensor {
    this.checkInput(x);
    return conv2dReluMaxPool2d(
      x,
      this.weight,
      this.bias,
      { stride: this.stride, padding: this.padding },
      { kernelSize: pool.kernelSize, stride: pool.stride, padding: pool.padding },
    );
  }

  private checkInput(x: { shape: readonly number[] }): void {
    if (x.shape.length !== 4 || x.shape[1] !== this.inChannels)
      throw new RangeError(
        `Expected input of shape [N, ${this.inChannels}, H, W] for ${this.describe()} but received ${formatShape(x.shape)}`,
      );
  }

  private geometry(input: readonly number[]) {
    this.checkInput({ shape: input });
    return conv2dGeometry(input, this.weight.shape, { stride: this.stride, padding: this.padding });
  }

  override outputShape(input: readonly number[]): number[] {
    const g = this.geometry(input);
    return [g.n, g.cOut, g.outH, g.outW];
  }

  override macs(input: readonly number[]): number {
    const g = this.geometry(input);
    return g.n * g.cOut * g.outH * g.outW * g.cIn * g.kh * g.kw;
  }

  override describe(): string {
    const [kh, kw] = this.kernelSize;
    const fmt = (p: Pair) => (typeof p === "number" ? `${p}` : `(${p[0]}, ${p[1]})`);
    let s = `Conv2d(${this.inChannels}, ${this.outChannels}, kernel_size=${kh === kw ? kh : `(${kh}, ${kw})`}`;
    if (fmt(this.stride) !== "1") s += `, stride=${fmt(this.stride)}`;
    if (fmt(this.padding) !== "0") s += `, padding=${fmt(this.padding)}`;
    return `${s}${this.bias ? "" : ", bias=False"})`;
  }
}

export class Linear extends Module {
  weight: Parameter;
  bias: Parameter | null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: { bias?: boolean } = {},
  ) {
    super();
    positiveInt(inFeatures, "inFeatures", `Linear(${inFeatures}, ${outFeatures})`);
    positiveInt(outFeatures, "outFeatures", `Linear(${inFeatures}, ${outFeatures})`);
    this.weight = new Parameter(new Float32Array(outFeatures * inFeatures), [outFeatures, inFeatures]);
    this.bias = (options.bias ?? true) ? new Parameter(new Float32Array(outFeatures), [outFeatures]) : null;
    resetLinearLike(this.weight, this.bias, inFeatures);
  }

  /** Set by prepack(): no-grad forwards of more than 4 rows use a packed copy of the weight. */
  private prepackWeight = false;
  private packed: PackedLinearWeight | null = null;

  /**
   * Inference with the weight packed once into the GEMM kernel's layout (on backends that have a packed
   * GEMM), instead of on every call: the same outputs bit for bit, faster at batch > 4, for one more copy
   * of the weight in memory. The copy is made at the first no-grad forward and made again after any
   * change of the weight through the library (its `version`); `prepack(false)` drops it.
   */
  prepack(enable = true): this {
    this.prepackWeight = enable;
    if (!enable) this.packed = null;
    return this;
  }

  forward(x: Tensor): Tensor {
    this.checkInput(x.shape);
    // (A packed copy is for the CPU's GEMM; on a device the weight is read in place.)
    if (this.prepackWeight && !isGradEnabled() && x.size / this.inFeatures > 4 && !this.weight.deviceStorage)
      this.packed = packLinearWeight(this.weight, this.packed);
    return linear(x, this.weight, this.bias, this.packed);
  }

  override outputShape(input: readonly number[]): number[] {
    this.checkInput(input);
    return [...input.slice(0, -1), this.outFeatures];
  }

  override macs(input: readonly number[]): number {
    this.checkInput(input);
    return (input.reduce((a, b) => a * b, 1) / this.inFeatures) * this.inFeatures * this.outFeatures;
  }

  private checkInput(shape: readonly number[]): void {
    if (shape.length < 1 || shape[shape.length - 1] !== this.inFeatures)
      throw new RangeError(
        `Expected input of shape [N, ${this.inFeatures}] for ${this.describe()} but received ${formatShape(shape)}` +
          (shape.length === 2
            ? "; hint: if this layer follows a conv trunk, the image size does not match the one the model was built for (resize the input, or build the model with a matching inputSize)"
            : ""),
      );
  }

  override describe(): string {
    return `Linear(in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=${this.bias ? "True" : "False"})`;
  }
}

/**
 * Sets every Linear of `model` to prepack() its weight and puts the model in eval mode, for serving and
 * batch inference (torch.jit.freeze + optimize_for_inference does the like for MKL-DNN). Returns the model.
 */
export function prepackForInference<M extends Module>(model: M): M {
  for (const m of model.modules()) if (m instanceof Linear) m.prepack();
  return model.eval();
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

export class MaxPool2d extends Module {
  constructor(
    readonly kernelSize: Pair,
    readonly stride: Pair = kernelSize,
    readonly padding: Pair = 0,
  ) {
    super();
  }

  forward(x: Tensor): Tensor {
    return maxPool2d(x, { kernelSize: this.kernelSize, stride: this.stride, padding: this.padding });
  }

  override outputShape(input: readonly number[]): number[] {
    const g = maxPool2dGeometry(input, {
      kernelSize: this.kernelSize,
      stride: this.stride,
      padding: this.padding,
    });
    return [g.n, g.c, g.outH, g.outW];
  }

  override describe(): string {
    return `MaxPool2d(kernel_size=${this.kernelSize}, stride=${this.stride}, padding=${this.padding})`;
  }
}

export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1))
      throw new RangeError(`Expected a dropout probability in [0, 1] but received ${p}`);
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training);
  }

  override describe(): string {
    return `Dropout(p=${this.p})`;
  }
}

export class Flatten extends Module {
  constructor(
    readonly startDim = 1,
    readonly endDim = -1,
  ) {
    super();
  }

  forward(x: Tensor): Tensor {
    return flatten(x, this.startDim, this.endDim);
  }

  override outputShape(input: readonly number[]): number[] {
    return flattenShape(input, this.startDim, this.endDim);
  }
}

export class BatchNorm2d extends Module {
  weight: Parameter;
  bias: Parameter;

  constructor(
    readonly numFeatures: number,
    readonly eps = 1e-5,
    readonly momentum = 0.1,
  ) {
    super();
    positiveInt(numFeatures, "numFeatures", `BatchNorm2d(${numFeatures})`);
    this.weight = new Parameter(ones([numFeatures]).data, [numFeatures]);
    this.bias = new Parameter(new Float32Array(numFeatures), [numFeatures]);
    this.buffers.set("running_mean", zeros([numFeatures]));
    this.buffers.set("running_var", ones([numFeatures]));
    this.buffers.set("num_batches_tracked", zeros([]));
  }

  get runningMean(): Tensor {
    return this.buffers.get("running_mean")!;
  }

  get runningVar(): Tensor {
    return this.buffers.get("running_var")!;
  }

  override outputShape(input: readonly number[]): number[] {
    if (input.length !== 4 || input[1] !== this.numFeatures)
      throw new RangeError(
        `Expected input of shape [N, ${this.numFeatures}, H, W] for ${this.describe()} but received ${formatShape(input)}`,
      );
    return [...input];
  }

  forward(x: Tensor): Tensor {
    return this.run(x, false);
  }

  /** Fused batch norm + ReLU (one pass over the output); equal to ReLU(BatchNorm2d(x)). */
  forwardRelu(x: Tensor): Tensor {
    return this.run(x, true);
  }

  private run(x: Tensor, relu: boolean): Tensor {
    this.outputShape(x.shape);
    if (this.training) this.buffers.get("num_batches_tracked")!.data[0] += 1;
    return batchNorm(x, this.runningMean, this.runningVar, this.weight, this.bias, {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
      relu,
    });
  }

  override describe(): string {
    return `BatchNorm2d(${this.numFeatures}, eps=${this.eps}, momentum=${this.momentum})`;
  }
}

export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize: Pair) {
    super();
  }

  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, this.outputSize);
  }

  override outputShape(input: readonly number[]): number[] {
    if (input.length !== 4)
      throw new RangeError(
        `Expected input of shape [N, C, H, W] for ${this.describe()} but received ${formatShape(input)}`,
      );
    return [input[0], input[1], ...pair(this.outputSize, "outputSize")];
  }

  override describe(): string {
    return `AdaptiveAvgPool2d(output_size=${typeof this.outputSize === "number" ? this.outputSize : `(${this.outputSize.join(", ")})`})`;
  }
}
