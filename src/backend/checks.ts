// Buffer and geometry checks shared by both backends, so both reject bad calls with the same messages
// before any kernel runs (the native binding re-checks in C++).
import type { Conv2dGeometry, Pool2dGeometry, SgdOptions } from "./backend.js";

export function expectLength(what: string, a: ArrayLike<number>, n: number): void {
  if (a.length !== n) throw new RangeError(`Expected ${what} of length ${n} but received length ${a.length}`);
}

/** Floats in a B (k, n) packed by gemmPackB: k rows of n rounded up to the kernel's 16-column panels. */
export function packedGemmBSize(n: number, k: number): number {
  return Math.ceil(n / 16) * 16 * k;
}

export function expectSize(what: string, v: number, min = 0): void {
  if (!Number.isInteger(v) || v < min || v > 2147483647)
    throw new RangeError(`Expected ${what} to be an integer >= ${min} but received ${v}`);
}

/** Validates a conv geometry and returns the buffer lengths it implies. */
export function checkConv(g: Conv2dGeometry): { x: number; w: number; y: number } {
  for (const key of ["n", "cIn", "h", "w", "cOut", "kh", "kw", "padH", "padW", "outH", "outW"] as const)
    expectSize(`g.${key}`, g[key]);
  expectSize("g.strideH", g.strideH, 1);
  expectSize("g.strideW", g.strideW, 1);
  return {
    x: g.n * g.cIn * g.h * g.w,
    w: g.cOut * g.cIn * g.kh * g.kw,
    y: g.n * g.cOut * g.outH * g.outW,
  };
}

/** Validates a conv geometry and a forward pass's inputs; returns the buffer lengths. */
function checkConvInputs(
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  g: Conv2dGeometry,
): { x: number; w: number; y: number } {
  const len = checkConv(g);
  expectLength("x", x, len.x);
  expectLength("w", w, len.w);
  if (bias) expectLength("bias", bias, g.cOut);
  return len;
}

/** Validates a pooling geometry and returns the buffer lengths it implies. */
export function checkPool(g: Pool2dGeometry): { x: number; y: number } {
  for (const key of ["n", "c", "h", "w", "kh", "kw", "padH", "padW", "outH", "outW"] as const)
    expectSize(`g.${key}`, g[key]);
  expectSize("g.strideH", g.strideH, 1);
  expectSize("g.strideW", g.strideW, 1);
  return { x: g.n * g.c * g.h * g.w, y: g.n * g.c * g.outH * g.outW };
}

/** The sizes of a GEMM and its C (m, n) and A (m, k), shared by gemm and gemmPackedB. */
function checkGemmCA(c: Float32Array, a: Float32Array, m: number, n: number, k: number): void {
  expectSize("m", m);
  expectSize("n", n);
  expectSize("k", k);
  expectLength("C", c, m * n);
  expectLength("A", a, m * k);
}

/**
 * The batch-norm family's sizes (n, c, hw) and arrays, named by their keys: `planes` hold n*c*hw values,
 * `channels` c; checked in the order given.
 */
function checkChannelwise(
  n: number,
  c: number,
  hw: number,
  planes: Record<string, Float32Array>,
  channels: Record<string, Float32Array> = {},
): void {
  expectSize("n", n);
  expectSize("c", c);
  expectSize("hw", hw);
  for (const [name, a] of Object.entries(planes)) expectLength(name, a, n * c * hw);
  for (const [name, a] of Object.entries(channels)) expectLength(name, a, c);
}

/**
 * The argument checks of every Backend method, named as the methods: both backends call these first, so
 * a bad call fails the same way whichever backend runs it.
 */
export const checkArgs = {
  gemm(c: Float32Array, a: Float32Array, b: Float32Array, m: number, n: number, k: number): void {
    checkGemmCA(c, a, m, n, k);
    expectLength("B", b, k * n);
  },
  gemmPackedB(c: Float32Array, a: Float32Array, packed: Float32Array, m: number, n: number, k: number): void {
    checkGemmCA(c, a, m, n, k);
    expectLength("packed", packed, packedGemmBSize(n, k));
  },
  conv2dForward(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
  ): void {
    expectLength("y", y, checkConvInputs(x, w, bias, g).y);
  },
  conv2dReluMaxPool2dForward(
    y: Float32Array,
    argmax: Int32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
  ): void {
    checkConvInputs(x, w, bias, g);
    const pooled = g.n * g.cOut * Math.floor(g.outH / 2) * Math.floor(g.outW / 2);
    expectLength("y", y, pooled);
    expectLength("argmax", argmax, pooled);
  },
  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null | undefined,
  ): void {
    const len = checkConv(g);
    expectLength("dx", dx, len.x);
    expectLength("dy", dy, len.y);
    expectLength("w", w, len.w);
    if (reluMask) expectLength("reluMask", reluMask, len.x);
  },
  conv2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): void {
    const len = checkConv(g);
    expectLength("dw", dw, len.w);
    expectLength("dy", dy, len.y);
    expectLength("x", x, len.x);
    if (db) expectLength("db", db, g.cOut);
  },
  conv2dReluMaxPool2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    argmax: Int32Array,
    reluY: Float32Array | null,
    x: Float32Array,
    g: Conv2dGeometry,
  ): void {
    const len = checkConv(g);
    const pooled = g.n * g.cOut * Math.floor(g.outH / 2) * Math.floor(g.outW / 2);
    expectLength("dw", dw, len.w);
    if (db) expectLength("db", db, g.cOut);
    expectLength("dy", dy, pooled);
    expectLength("argmax", argmax, pooled);
    if (reluY) expectLength("reluY", reluY, pooled);
    expectLength("x", x, len.x);
  },
  maxPool2dForward(y: Float32Array, argmax: Int32Array, x: Float32Array, g: Pool2dGeometry): void {
    const len = checkPool(g);
    expectLength("y", y, len.y);
    expectLength("argmax", argmax, len.y);
    expectLength("x", x, len.x);
  },
  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut: Float32Array | null | undefined,
  ): void {
    const len = checkPool(g);
    expectLength("dx", dx, len.x);
    expectLength("dy", dy, len.y);
    expectLength("argmax", argmax, len.y);
    if (reluOut) expectLength("reluOut", reluOut, len.y);
  },
  relu(y: Float32Array, x: Float32Array): void {
    expectLength("y", y, x.length);
  },
  reluBackward(dx: Float32Array, dy: Float32Array, y: Float32Array): void {
    expectLength("dy", dy, y.length);
    expectLength("dx", dx, y.length);
  },
  mul(y: Float32Array, x: Float32Array, mask: Float32Array): void {
    expectLength("mask", mask, x.length);
    expectLength("y", y, x.length);
  },
  addInPlace(y: Float32Array, x: Float32Array): void {
    expectLength("x", x, y.length);
  },
  addRowBias(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
    expectSize("rows", rows);
    expectSize("cols", cols);
    expectLength("y", y, rows * cols);
    expectLength("bias", bias, cols);
  },
  softmaxCrossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    n: number,
    c: number,
  ): void {
    expectSize("n", n);
    expectSize("c", c);
    expectLength("logits", logits, n * c);
    expectLength("dlogits", dlogits, n * c);
    expectLength("targets", targets, n);
  },
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
  ): void {
    checkChannelwise(n, c, hw, { x, y }, { saveMean, saveInvStd, gamma, beta });
  },
  channelAffine(
    y: Float32Array,
    x: Float32Array,
    scale: Float32Array,
    shift: Float32Array,
    n: number,
    c: number,
    hw: number,
  ): void {
    checkChannelwise(n, c, hw, { x, y }, { scale, shift });
  },
  batchNormBackward(
    dx: Float32Array,
    dy: Float32Array,
    x: Float32Array,
    n: number,
    c: number,
    hw: number,
  ): void {
    checkChannelwise(n, c, hw, { x, dx, dy });
  },
  sgdStep(param: Float32Array, grad: Float32Array, momentumBuf: Float32Array | null, o: SgdOptions): void {
    expectLength("grad", grad, param.length);
    if (o.momentum !== 0 && !momentumBuf) throw new Error("Expected a momentum buffer when momentum > 0");
    if (momentumBuf) expectLength("momentum buffer", momentumBuf, param.length);
  },
};
