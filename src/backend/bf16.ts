// bfloat16 mixed precision (as PyTorch's CPU autocast and Keras's mixed_bfloat16 policy): the rounding
// that defines it, and the view of a backend through which every op runs while the precision is "bf16".
//
// Under bf16, convolutions (forward and both gradients) and GEMMs (linear layers, matmul) see their
// inputs rounded to bf16 and sum the products in float32; every other kernel, the weights, their
// gradients, the optimiser state and the loss stay float32 (master weights). A product of two bf16
// values is exact in float32, so the results differ from float32 ones by the rounding of the inputs
// (a relative 2^-9 per value) and from each other only in the order of the float32 sums.
import type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "./backend.js";
import { checkArgs, expectLength } from "./checks.js";

/**
 * y[i] = x[i] rounded to the nearest bfloat16, ties to even, held as a float32 (its low 16 bits zero):
 * the bit pattern plus 0x7fff plus its bit 16, truncated; every NaN becomes the quiet NaN 0x7fc00000
 * (PyTorch's c10::BFloat16); infinities stay, finite values beyond bf16's largest (about 3.39e38) become
 * infinite, denormals round like any other value. y may be x.
 */
export function roundBf16Reference(y: Float32Array, x: Float32Array): void {
  expectLength("y", y, x.length);
  const src = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const dst = new Uint32Array(y.buffer, y.byteOffset, y.length);
  for (let i = 0; i < src.length; i++) {
    const u = src[i];
    dst[i] =
      (u & 0x7fffffff) > 0x7f800000 ? 0x7fc00000 : ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  }
}

/** The precision ops compute in: "fp32", or "bf16" inputs with float32 sums for convolutions and GEMMs. */
export type Precision = "fp32" | "bf16";

export const precisions: readonly Precision[] = ["fp32", "bf16"];

/** Checks a precision given by a user (a flag, an option), with a message naming the choices. */
export function parsePrecision(value: string, what = "the precision"): Precision {
  if (value !== "fp32" && value !== "bf16")
    throw new RangeError(`Expected ${what} to be "fp32" or "bf16" but received ${JSON.stringify(value)}`);
  return value;
}

type Conv2dReluMaxPool2dForward = NonNullable<Backend["conv2dReluMaxPool2dForward"]>;
type Conv2dReluMaxPool2dBackwardWeight = NonNullable<Backend["conv2dReluMaxPool2dBackwardWeight"]>;

/**
 * `base` seen through bf16 autocast: gemm runs as base.gemmBf16, the convolutions on copies of their
 * inputs rounded by base.roundBf16 (x and w forward, dy and w for the input gradient, dy and x for the
 * weight and bias gradients) into scratch arrays the view keeps; the rest passes through. The packed
 * GEMM (a float32 copy of a weight) is left out, so linear layers take gemmBf16.
 */
export class Bf16Backend implements Backend {
  readonly name: Backend["name"];
  readonly conv2dReluMaxPool2dForward?: Conv2dReluMaxPool2dForward;
  readonly conv2dReluMaxPool2dBackwardWeight?: Conv2dReluMaxPool2dBackwardWeight;
  readonly dropoutMask?: Backend["dropoutMask"];
  /** Scratch per role (0: x or dy, 1: w, 2: the second operand of a weight gradient), grown as needed. */
  private readonly scratch: Float32Array[] = [new Float32Array(0), new Float32Array(0), new Float32Array(0)];

  constructor(readonly base: Backend) {
    this.name = base.name;
    const fused = base.conv2dReluMaxPool2dForward?.bind(base);
    if (fused)
      this.conv2dReluMaxPool2dForward = (y, argmax, x, w, bias, g) => {
        checkArgs.conv2dReluMaxPool2dForward(y, argmax, x, w, bias, g);
        if (base.conv2dReluMaxPool2dForwardBf16?.(y, argmax, x, w, bias, g)) return true;
        return fused(y, argmax, this.rounded(0, x), this.rounded(1, w), bias, g);
      };
    const pooledGrad = base.conv2dReluMaxPool2dBackwardWeight?.bind(base);
    // As conv2dBackwardWeight below for filters of under 32 taps, which the bf16 kernels leave to the
    // float32 ones on rounded dy and x: the pooled gradient's rounding is that of the scattered one.
    if (pooledGrad)
      this.conv2dReluMaxPool2dBackwardWeight = (dw, db, dy, argmax, reluY, x, g) => {
        checkArgs.conv2dReluMaxPool2dBackwardWeight(dw, db, dy, argmax, reluY, x, g);
        if (g.cIn * g.kh * g.kw >= 32) return false;
        return pooledGrad(dw, db, this.rounded(0, dy), argmax, reluY, this.rounded(2, x), g);
      };
    if (base.dropoutMask) this.dropoutMask = base.dropoutMask.bind(base);
  }

  /** x rounded to bf16 in the scratch of `slot`. */
  private rounded(slot: 0 | 1 | 2, x: Float32Array): Float32Array {
    if (this.scratch[slot].length < x.length) this.scratch[slot] = new Float32Array(x.length);
    const y = this.scratch[slot].subarray(0, x.length);
    this.base.roundBf16(y, x);
    return y;
  }

  numThreads(): number {
    return this.base.numThreads();
  }

  setNumThreads(n: number): void {
    this.base.setNumThreads(n);
  }

  gemm(
    c: Float32Array,
    a: Float32Array,
    b: Float32Array,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    beta: 0 | 1,
  ): void {
    this.base.gemmBf16(c, a, b, m, n, k, transA, transB, beta);
  }

  gemmBf16(
    c: Float32Array,
    a: Float32Array,
    b: Float32Array,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    beta: 0 | 1,
  ): void {
    this.base.gemmBf16(c, a, b, m, n, k, transA, transB, beta);
  }

  roundBf16(y: Float32Array, x: Float32Array): void {
    this.base.roundBf16(y, x);
  }

  conv2dForward(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
    relu: boolean,
  ): void {
    checkArgs.conv2dForward(y, x, w, bias, g);
    if (this.base.conv2dForwardBf16?.(y, x, w, bias, g, relu)) return;
    this.base.conv2dForward(y, this.rounded(0, x), this.rounded(1, w), bias, g, relu);
  }

  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null = null,
  ): void {
    checkArgs.conv2dBackwardInput(dx, dy, w, g, reluMask);
    if (this.base.conv2dBackwardInputBf16?.(dx, dy, w, g, reluMask)) return;
    this.base.conv2dBackwardInput(dx, this.rounded(0, dy), this.rounded(1, w), g, reluMask);
  }

  conv2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): void {
    checkArgs.conv2dBackwardWeight(dw, db, dy, x, g);
    if (this.base.conv2dBackwardWeightBf16?.(dw, db, dy, x, g)) return;
    this.base.conv2dBackwardWeight(dw, db, this.rounded(0, dy), this.rounded(2, x), g);
  }

  maxPool2dForward(y: Float32Array, argmax: Int32Array, x: Float32Array, g: Pool2dGeometry): void {
    this.base.maxPool2dForward(y, argmax, x, g);
  }

  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut?: Float32Array | null,
  ): void {
    this.base.maxPool2dBackward(dx, dy, argmax, g, reluOut);
  }

  relu(y: Float32Array, x: Float32Array): void {
    this.base.relu(y, x);
  }

  reluBackward(dx: Float32Array, dy: Float32Array, y: Float32Array): void {
    this.base.reluBackward(dx, dy, y);
  }

  mul(y: Float32Array, x: Float32Array, mask: Float32Array): void {
    this.base.mul(y, x, mask);
  }

  addInPlace(y: Float32Array, x: Float32Array): void {
    this.base.addInPlace(y, x);
  }

  addRowBias(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
    this.base.addRowBias(y, bias, rows, cols);
  }

  softmaxCrossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    n: number,
    c: number,
  ): number {
    return this.base.softmaxCrossEntropy(dlogits, logits, targets, n, c);
  }

  batchNormForwardTrain(
    y: Float32Array,
    saveMean: Float32Array,
    saveInvStd: Float32Array,
    x: Float32Array,
    gamma: Float32Array,
    beta: Float32Array,
    n: number,
    c: number,
    hw: number,
    eps: number,
    relu?: boolean,
  ): void {
    this.base.batchNormForwardTrain(y, saveMean, saveInvStd, x, gamma, beta, n, c, hw, eps, relu);
  }

  channelAffine(
    y: Float32Array,
    x: Float32Array,
    scale: Float32Array,
    shift: Float32Array,
    n: number,
    c: number,
    hw: number,
    relu?: boolean,
  ): void {
    this.base.channelAffine(y, x, scale, shift, n, c, hw, relu);
  }

  batchNormBackward(
    dx: Float32Array,
    dgamma: Float32Array,
    dbeta: Float32Array,
    dy: Float32Array,
    x: Float32Array,
    gamma: Float32Array,
    saveMean: Float32Array,
    saveInvStd: Float32Array,
    n: number,
    c: number,
    hw: number,
  ): void {
    this.base.batchNormBackward(dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd, n, c, hw);
  }

  sgdStep(param: Float32Array, grad: Float32Array, momentumBuf: Float32Array | null, o: SgdOptions): void {
    this.base.sgdStep(param, grad, momentumBuf, o);
  }
}
