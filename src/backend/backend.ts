// The Backend interface: the heavy kernels, as named, typed methods.
//
// Every method writes its outputs in place into caller-allocated Float32Arrays (outputs first, then
// inputs, then sizes), so tensor memory stays owned by JavaScript. Shapes are validated in TypeScript
// before a kernel is called; implementations re-check buffer lengths and throw on a mismatch.
// Two implementations: `reference.ts` (pure TypeScript, the spec) and the native addon (`native.ts`).

/** Geometry of a 2-D convolution, NCHW input, (cOut, cIn, kh, kw) weight, no groups or dilation. */
export interface Conv2dGeometry {
  n: number;
  cIn: number;
  h: number;
  w: number;
  cOut: number;
  kh: number;
  kw: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  outH: number;
  outW: number;
}

/** Geometry of a 2-D pooling window over an NCHW input (padding counts as -Infinity for max). */
export interface Pool2dGeometry {
  n: number;
  c: number;
  h: number;
  w: number;
  kh: number;
  kw: number;
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  outH: number;
  outW: number;
}

/** Hyper-parameters of one SGD step (PyTorch's torch.optim.SGD semantics). */
export interface SgdOptions {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  /** true on the first step for this parameter: the momentum buffer is set to the gradient. */
  firstStep: boolean;
}

export interface Backend {
  readonly name: "reference" | "native";

  /** Threads used by the kernels (the reference backend always uses 1). */
  numThreads(): number;
  setNumThreads(n: number): void;

  /**
   * General matrix multiply, row-major: C = op(A) * op(B) + beta * C, op(X) = X or X^T.
   * C is (m, n); op(A) is (m, k); op(B) is (k, n). beta is 0 (overwrite) or 1 (accumulate).
   */
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
  ): void;

  /**
   * Mixed precision (bf16.ts): gemm's arguments and result, with every element of op(A) and op(B) first
   * rounded to bfloat16 as roundBf16 does and the products summed in float32.
   */
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
  ): void;
  /** y = x rounded to the nearest bfloat16, ties to even, held as float32 (PyTorch's rounding). y may be x. */
  roundBf16(y: Float32Array, x: Float32Array): void;
  /**
   * Optional bf16 convolutions: conv2dForward, conv2dReluMaxPool2dForward, conv2dBackwardInput and
   * conv2dBackwardWeight's arguments and results with x, w and dy rounded to bfloat16 and the products summed in float32 (as gemmBf16). Each
   * returns false, writing nothing, where the backend has no bf16 kernel for the geometry; the bf16 view
   * (bf16.ts) then rounds the inputs and runs the float32 kernel.
   */
  conv2dForwardBf16?(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
    relu: boolean,
  ): boolean;
  conv2dReluMaxPool2dForwardBf16?(
    y: Float32Array,
    argmax: Int32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
  ): boolean;
  conv2dBackwardInputBf16?(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask?: Float32Array | null,
  ): boolean;
  conv2dBackwardWeightBf16?(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): boolean;

  /**
   * Optional: op(B) (k, n) packed once into the GEMM kernel's own layout, for gemmPackedB (what
   * onnxruntime does with constant weights when a session starts). Backends without it leave it out.
   */
  gemmPackB?(b: Float32Array, n: number, k: number, transB: boolean): Float32Array;
  /**
   * Optional: C (m, n) = A (m, k) * B + beta * C with B as returned by gemmPackB(b, n, k, transB); the
   * values are those of gemm(c, a, b, m, n, k, false, transB, beta) bit for bit when m > 4.
   */
  gemmPackedB?(
    c: Float32Array,
    a: Float32Array,
    packed: Float32Array,
    m: number,
    n: number,
    k: number,
    beta: 0 | 1,
  ): void;

  /** y = conv(x, w) + bias, then ReLU when `relu` is set. y is (n, cOut, outH, outW); x is (n, cIn, h, w). */
  conv2dForward(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
    relu: boolean,
  ): void;
  /**
   * Optional fused kernel: y and argmax (n, cOut, floor(outH / 2), floor(outW / 2)) = max_pool2d(kernel 2,
   * stride 2) of relu(conv(x, w) + bias) and its argmax (flat index into the (outH, outW) plane, as
   * maxPool2dForward writes it), without writing the convolution's output. Returns false, writing
   * nothing, where the backend has no such kernel for the geometry; callers then run conv2dForward and
   * maxPool2dForward.
   */
  conv2dReluMaxPool2dForward?(
    y: Float32Array,
    argmax: Int32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
  ): boolean;
  /**
   * dx = transposed convolution of dy with w (overwrites dx). dx is (n, cIn, h, w); dy is (n, cOut, outH, outW).
   * reluMask (n, cIn, h, w), when given, is the conv's input x and x is a ReLU output: dx is then zeroed
   * where reluMask is not > 0, i.e. ReLU's backward is fused (same result as reluBackward(dx, dx, x)).
   */
  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask?: Float32Array | null,
  ): void;
  /**
   * Optional fused kernel: conv2dBackwardWeight's dw and db for conv2dReluMaxPool2dForward's output, from
   * the pooled gradient dy, the forward's argmax and its output reluY (n, cOut, floor(outH / 2),
   * floor(outW / 2)), without writing the convolution's gradient: the values maxPool2dBackward (with
   * reluY) then conv2dBackwardWeight give. Returns false, writing nothing, where the backend has no such
   * kernel for the geometry (the native one has it for a grayscale first layer, whose input needs no
   * gradient); callers then run those two.
   */
  conv2dReluMaxPool2dBackwardWeight?(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    argmax: Int32Array,
    reluY: Float32Array | null,
    x: Float32Array,
    g: Conv2dGeometry,
  ): boolean;
  /** dw = correlation of x with dy, db = sum of dy over (n, outH, outW); both overwritten. db may be null. */
  conv2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): void;

  /** y = max over each window; argmax holds the flat index into x's (h, w) plane of each max (-1 if none). */
  maxPool2dForward(y: Float32Array, argmax: Int32Array, x: Float32Array, g: Pool2dGeometry): void;
  /**
   * dx = scatter of dy to the argmax positions (overwrites dx). reluOut (n, c, outH, outW), when given, is
   * the pool's output y and its input x is a ReLU output: windows whose max is not > 0 pass no gradient,
   * i.e. ReLU's backward is fused (same result as reluBackward(dx, dx, x)).
   */
  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut?: Float32Array | null,
  ): void;

  /** y = max(x, 0). y may alias x. */
  relu(y: Float32Array, x: Float32Array): void;
  /** dx = dy where y > 0 else 0. dx may alias dy. */
  reluBackward(dx: Float32Array, dy: Float32Array, y: Float32Array): void;

  /** y = x * mask, element-wise (dropout forward with a pre-scaled mask, and its backward). */
  mul(y: Float32Array, x: Float32Array, mask: Float32Array): void;
  /**
   * Optional: dropout's mask, mask[i] = u >= p ? keep : 0 for the next uniform draws u of the xoshiro128**
   * generator whose 4 state words are `state` (advanced in place): what a loop over Generator.random()
   * gives, draw for draw.
   */
  dropoutMask?(mask: Float32Array, p: number, keep: number, state: Uint32Array): void;
  /** y += x, element-wise (gradient accumulation, residual adds). */
  addInPlace(y: Float32Array, x: Float32Array): void;

  /** y(rows, cols) += bias(cols), broadcast over rows (linear layer bias). */
  addRowBias(y: Float32Array, bias: Float32Array, rows: number, cols: number): void;

  /**
   * Softmax cross-entropy, mean over the batch. logits (n, c); targets are class indices.
   * Writes the gradient with respect to the logits, (softmax - onehot) / n, into dlogits, and returns the loss.
   */
  softmaxCrossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    n: number,
    c: number,
  ): number;

  /**
   * Batch normalisation forward over (n, c, hw) in training mode: normalises with the batch statistics,
   * writes y and the per-channel batch mean and inverse std into saveMean / saveInvStd. With relu, y is
   * max(0, ...) (BatchNorm2d followed by ReLU, fused).
   */
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
  ): void;
  /**
   * y (n, c, hw) = x * scale[ch] + shift[ch] for every channel ch, then max(0, y) with relu: batch
   * normalisation with fixed statistics (inference), and its input gradient. y may be x.
   */
  channelAffine(
    y: Float32Array,
    x: Float32Array,
    scale: Float32Array,
    shift: Float32Array,
    n: number,
    c: number,
    hw: number,
    relu?: boolean,
  ): void;
  /** Batch normalisation backward (training mode): dx, dgamma, dbeta, all overwritten. */
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
  ): void;

  /** One SGD update in place on param (and the momentum buffer when momentum > 0). */
  sgdStep(param: Float32Array, grad: Float32Array, momentumBuf: Float32Array | null, o: SgdOptions): void;
}
