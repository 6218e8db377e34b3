// Loads the C++ addon built by node-gyp (build/Release/vgg_native.node) and wraps it as a Backend.
// Lengths are validated here (same messages as the reference backend); the addon re-checks every buffer
// and size itself, so even a direct call with bad arguments throws instead of touching memory out of bounds.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "./backend.js";
import { checkConv, checkPool, expectLength, expectSize } from "./checks.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** Paths tried, in order, for the compiled addon. */
export const addonPaths = [
  join(root, "build", "Release", "vgg_native.node"),
  join(root, "build", "Debug", "vgg_native.node"),
];

/** What the addon reports about itself. */
export interface NativeInfo {
  /** Kernel instruction set in use: "avx2+fma" or "portable" (VGG_NATIVE_ISA=portable forces it). */
  isa: string;
  threads: number;
  cpuHasAvx2Fma: boolean;
  gemmKernel: string;
  /** The file recording measured kernel choices ("" when VGG_KERNEL_CACHE=off or there is no home folder). */
  kernelCache: string;
}

/** The raw addon exports (native/binding.cc). Exported for tests of the C++ argument guards. */
export interface NativeAddon {
  gemm(
    c: Float32Array,
    a: Float32Array,
    b: Float32Array,
    m: number,
    n: number,
    k: number,
    transA: boolean,
    transB: boolean,
    beta: number,
  ): void;
  conv2dForward(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
    relu: boolean,
  ): void;
  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null,
  ): void;
  conv2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): void;
  maxPool2dForward(y: Float32Array, argmax: Int32Array, x: Float32Array, g: Pool2dGeometry): void;
  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut: Float32Array | null,
  ): void;
  relu(y: Float32Array, x: Float32Array): void;
  reluBackward(dx: Float32Array, dy: Float32Array, y: Float32Array): void;
  mul(y: Float32Array, x: Float32Array, mask: Float32Array): void;
  addInPlace(y: Float32Array, x: Float32Array): void;
  addRowBias(y: Float32Array, bias: Float32Array, rows: number, cols: number): void;
  softmaxCrossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    n: number,
    c: number,
  ): number;
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
  ): void;
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
  sgdStep(param: Float32Array, grad: Float32Array, momentumBuf: Float32Array | null, o: SgdOptions): void;
  numThreads(): number;
  setNumThreads(n: number): void;
  info(): NativeInfo;
  setConvAlgorithm(a: ConvAlgorithm): void;
  convKernel(g: Conv2dGeometry, backward: boolean): string;
}

/**
 * How 3x3 stride-1 convolutions run: "auto" times Winograd F(2x2,3x3) against im2col + GEMM the first time
 * a shape is seen on this machine and records the faster in the kernel cache file (`info().kernelCache`),
 * so later processes reuse the choice and give bit-identical results; the others force one. The
 * environment variable VGG_CONV_ALGO sets it at load.
 */
export type ConvAlgorithm = "auto" | "direct" | "winograd";

const convAlgorithms: readonly string[] = ["auto", "direct", "winograd"];

let cached: NativeAddon | Error | null = null;

/** Loads the addon once; returns an Error that says why it could not be loaded and how to fix it. */
export function loadNativeAddon(): NativeAddon | Error {
  if (cached) return cached;
  const path = addonPaths.find((p) => existsSync(p));
  if (!path) {
    cached = new Error(
      `the native addon is not built (looked for ${addonPaths.join(", ")}). ` +
        "Possible solutions: run `npm install` (or `npx node-gyp rebuild`) in the package folder; it needs python3, make and a C++17 compiler.",
    );
    return cached;
  }
  let addon: NativeAddon;
  try {
    const require = createRequire(import.meta.url);
    addon = require(path) as NativeAddon;
  } catch (e) {
    cached = new Error(
      `the native addon at ${path} failed to load: ${(e as Error).message}. Possible solutions: run \`npx node-gyp rebuild\`.`,
    );
    return cached;
  }
  const algorithm = process.env.VGG_CONV_ALGO;
  if (algorithm !== undefined && algorithm !== "") {
    if (!convAlgorithms.includes(algorithm))
      throw new Error(
        `Expected VGG_CONV_ALGO to be "auto", "direct" or "winograd" but received "${algorithm}"; ` +
          "hint: unset it to let measured choices decide",
      );
    addon.setConvAlgorithm(algorithm as ConvAlgorithm);
  }
  cached = addon;
  return cached;
}

/** The Backend implemented by the C++ addon. */
export class NativeBackend implements Backend {
  readonly name = "native" as const;

  constructor(private readonly addon: NativeAddon) {}

  numThreads(): number {
    return this.addon.numThreads();
  }

  setNumThreads(n: number): void {
    expectSize("the thread count", n, 1);
    this.addon.setNumThreads(n);
  }

  info(): NativeInfo {
    return this.addon.info();
  }

  /** Chooses the 3x3 convolution algorithm (default "auto", or VGG_CONV_ALGO); recorded choices are kept. */
  setConvAlgorithm(a: ConvAlgorithm): void {
    if (a !== "auto" && a !== "direct" && a !== "winograd")
      throw new TypeError(
        `Expected the conv algorithm to be "auto", "direct" or "winograd" but received ${String(a)}`,
      );
    this.addon.setConvAlgorithm(a);
  }

  /** The kernel used for a layer's forward or input-gradient pass, e.g. "winograd F(2x2,3x3)", for `vgg info`. */
  convKernel(g: Conv2dGeometry, pass: "forward" | "backward"): string {
    checkConv(g);
    return this.addon.convKernel(g, pass === "backward");
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
    expectSize("m", m);
    expectSize("n", n);
    expectSize("k", k);
    expectLength("C", c, m * n);
    expectLength("A", a, m * k);
    expectLength("B", b, k * n);
    this.addon.gemm(c, a, b, m, n, k, transA, transB, beta);
  }

  conv2dForward(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
    relu: boolean,
  ): void {
    const len = checkConv(g);
    expectLength("y", y, len.y);
    expectLength("x", x, len.x);
    expectLength("w", w, len.w);
    if (bias) expectLength("bias", bias, g.cOut);
    this.addon.conv2dForward(y, x, w, bias, g, relu);
  }

  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null = null,
  ): void {
    const len = checkConv(g);
    expectLength("dx", dx, len.x);
    expectLength("dy", dy, len.y);
    expectLength("w", w, len.w);
    if (reluMask) expectLength("reluMask", reluMask, len.x);
    this.addon.conv2dBackwardInput(dx, dy, w, g, reluMask);
  }

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
    this.addon.conv2dBackwardWeight(dw, db, dy, x, g);
  }

  maxPool2dForward(y: Float32Array, argmax: Int32Array, x: Float32Array, g: Pool2dGeometry): void {
    const len = checkPool(g);
    expectLength("y", y, len.y);
    expectLength("argmax", argmax, len.y);
    expectLength("x", x, len.x);
    this.addon.maxPool2dForward(y, argmax, x, g);
  }

  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut: Float32Array | null = null,
  ): void {
    const len = checkPool(g);
    expectLength("dx", dx, len.x);
    expectLength("dy", dy, len.y);
    expectLength("argmax", argmax, len.y);
    if (reluOut) expectLength("reluOut", reluOut, len.y);
    this.addon.maxPool2dBackward(dx, dy, argmax, g, reluOut);
  }

  relu(y: Float32Array, x: Float32Array): void {
    expectLength("y", y, x.length);
    this.addon.relu(y, x);
  }

  reluBackward(dx: Float32Array, dy: Float32Array, y: Float32Array): void {
    expectLength("dy", dy, y.length);
    expectLength("dx", dx, y.length);
    this.addon.reluBackward(dx, dy, y);
  }

  mul(y: Float32Array, x: Float32Array, mask: Float32Array): void {
    expectLength("mask", mask, x.length);
    expectLength("y", y, x.length);
    this.addon.mul(y, x, mask);
  }

  addInPlace(y: Float32Array, x: Float32Array): void {
    expectLength("x", x, y.length);
    this.addon.addInPlace(y, x);
  }

  addRowBias(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
    expectSize("rows", rows);
    expectSize("cols", cols);
    expectLength("y", y, rows * cols);
    expectLength("bias", bias, cols);
    this.addon.addRowBias(y, bias, rows, cols);
  }

  softmaxCrossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    n: number,
    c: number,
  ): number {
    expectSize("n", n);
    expectSize("c", c);
    expectLength("logits", logits, n * c);
    expectLength("dlogits", dlogits, n * c);
    expectLength("targets", targets, n);
    return this.addon.softmaxCrossEntropy(dlogits, logits, targets, n, c);
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
  ): void {
    expectSize("n", n);
    expectSize("c", c);
    expectSize("hw", hw);
    expectLength("x", x, n * c * hw);
    expectLength("y", y, n * c * hw);
    expectLength("saveMean", saveMean, c);
    expectLength("saveInvStd", saveInvStd, c);
    expectLength("gamma", gamma, c);
    expectLength("beta", beta, c);
    this.addon.batchNormForwardTrain(y, saveMean, saveInvStd, x, gamma, beta, n, c, hw, eps);
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
    expectSize("n", n);
    expectSize("c", c);
    expectSize("hw", hw);
    expectLength("x", x, n * c * hw);
    expectLength("dx", dx, n * c * hw);
    expectLength("dy", dy, n * c * hw);
    this.addon.batchNormBackward(dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd, n, c, hw);
  }

  sgdStep(param: Float32Array, grad: Float32Array, momentumBuf: Float32Array | null, o: SgdOptions): void {
    expectLength("grad", grad, param.length);
    if (o.momentum !== 0 && !momentumBuf) throw new Error("Expected a momentum buffer when momentum > 0");
    if (momentumBuf) expectLength("momentum buffer", momentumBuf, param.length);
    this.addon.sgdStep(param, grad, momentumBuf, o);
  }
}

/** Returns the native backend, or an Error that says why it could not be loaded and how to fix it. */
export function loadNativeBackend(): Backend | Error {
  const addon = loadNativeAddon();
  return addon instanceof Error ? addon : new NativeBackend(addon);
}

/**
 * What the addon uses (instruction set, threads, GEMM kernel), for `vgg info`. When the addon is not
 * available, `available` is false, `isa` is "none" and `reason` says why and how to fix it.
 */
export function nativeInfo(): NativeInfo & { available: boolean; reason?: string } {
  const addon = loadNativeAddon();
  if (addon instanceof Error)
    return {
      available: false,
      reason: addon.message,
      isa: "none",
      threads: 0,
      cpuHasAvx2Fma: false,
      gemmKernel: "none",
      kernelCache: "",
    };
  return { available: true, ...addon.info() };
}
