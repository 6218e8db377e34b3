// Loads the C++ addon built by node-gyp (build/Release/vgg_native.node) and wraps it as a Backend.
// Lengths are validated here (same messages as the reference backend); the addon re-checks every buffer
// and size itself, so even a direct call with bad arguments throws instead of touching memory out of bounds.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "./backend.js";
import { checkArgs, checkConv, expectLength, expectSize } from "./checks.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** Paths tried, in order, for the compiled addon. */
export const addonPaths = [
  join(root, "build", "Release", "vgg_native.node"),
  join(root, "build", "Debug", "vgg_native.node"),
];

/** What the addon reports about itself. */
export interface NativeInfo {
  /**
   * Kernel instruction-set level in use: "portable", "avx2" (AVX2+FMA), "avx512" (F/BW/VL/DQ) or "amx"
   * (AMX-BF16), the best the CPU and OS allow unless VGG_NATIVE_ISA forces a lower one.
   */
  isa: string;
  /** The best level this CPU and OS allow, whatever VGG_NATIVE_ISA says. */
  bestIsa: string;
  /** The CPU features the kernels may use (CPUID and the OS's register state), e.g. "avx512_bf16". */
  cpuFeatures: string[];
  threads: number;
  cpuHasAvx2Fma: boolean;
  gemmKernel: string;
  /** The kernel chosen for each family (gemm, sparseGemm, winogradTransforms, directConv, maxPool, ...). */
  kernels: Record<string, string>;
  /** How many GEMMs this process has run on the sparse-A path (a left operand mostly zeros, e.g. after ReLU and dropout). */
  sparseGemmCalls: number;
  /** The file recording measured kernel choices ("" when VGG_KERNEL_CACHE=off or there is no home folder). */
  kernelCache: string;
}

/**
 * The raw addon exports (native/binding.cc): the Backend's kernels with the same signatures, except that
 * the optional fused-ReLU arguments are passed explicitly, plus the addon's own controls. Exported for
 * tests of the C++ argument guards.
 */
export interface NativeAddon
  extends Omit<
      Backend,
      | "name"
      | "gemm"
      | "gemmBf16"
      | "conv2dBackwardInput"
      | "maxPool2dBackward"
      | "gemmPackB"
      | "gemmPackedB"
      | "dropoutMask"
      | "conv2dForwardBf16"
      | "conv2dReluMaxPool2dForwardBf16"
      | "conv2dBackwardInputBf16"
      | "conv2dBackwardWeightBf16"
      | "conv2dReluMaxPool2dBackwardWeight"
    >,
    // The Backend's optional kernels that the addon always has.
    Required<
      Pick<
        Backend,
        | "gemmPackB"
        | "gemmPackedB"
        | "dropoutMask"
        | "conv2dForwardBf16"
        | "conv2dReluMaxPool2dForwardBf16"
        | "conv2dBackwardWeightBf16"
        | "conv2dReluMaxPool2dBackwardWeight"
      >
    > {
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
  conv2dReluMaxPool2dForward(
    y: Float32Array,
    argmax: Int32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
  ): boolean;
  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null,
  ): void;
  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut: Float32Array | null,
  ): void;
  gemmBf16(
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
  conv2dBackwardInputBf16(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null,
  ): boolean;
  /** The bf16 kernels' path: "amx" (TDPBF16PS), "avx512bf16" (VDPBF16PS) or "emulation" (VGG_BF16=emulate). */
  bf16Path(): string;
  info(): NativeInfo;
  /**
   * How long kernel threads poll before they sleep, in microseconds (default 2000): idle, for the next kernel,
   * and at a barrier or waiting for the end of a kernel.
   */
  setIdleSpin(microseconds: number): void;
  /**
   * Sets (true) or clears (false) one mark that the cores are busy with other work (a server's: a second
   * batch running, or requests waiting for its HTTP thread); while any mark is set, every kernel runs
   * serially on its calling thread (native/threadpool.h).
   */
  markCoresBusy(busy: boolean): void;
  /**
   * A PNG's float planes, what src/io/png-fast.ts gives bit for bit (grey: the luma plane (h, w); else
   * R, G, B (3, h, w)), or null for a file it does not take (native/png.h).
   */
  decodePng(bytes: Uint8Array, maxPixels: number, grey: boolean): Float32Array | null;
  setConvAlgorithm(a: ConvAlgorithm): void;
  convKernel(g: Conv2dGeometry, backward: boolean): string;
  convWeightKernel(g: Conv2dGeometry): string;
}

/**
 * How 3x3 stride-1 convolutions run: "auto" times Winograd F(2x2,3x3), Winograd F(4x4,3x3) and
 * im2col + GEMM for each pass the first time a shape is seen on this machine and records the
 * fastest in the kernel cache file (`info().kernelCache`), so later processes reuse the choice and give
 * bit-identical results; the others force one. The environment variable VGG_CONV_ALGO sets it at load.
 */
export type ConvAlgorithm = "auto" | "direct" | "winograd" | "winograd4";

const convAlgorithms: readonly string[] = ["auto", "direct", "winograd", "winograd4"];

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
    // A level VGG_NATIVE_ISA asks for that the CPU lacks (or an unknown name): the user's setting is wrong,
    // so say so instead of quietly falling back to the reference backend.
    if (/VGG_NATIVE_ISA/.test((e as Error).message)) throw new Error((e as Error).message);
    cached = new Error(
      `the native addon at ${path} failed to load: ${(e as Error).message}. Possible solutions: run \`npx node-gyp rebuild\`.`,
    );
    return cached;
  }
  const algorithm = process.env.VGG_CONV_ALGO;
  if (algorithm !== undefined && algorithm !== "") {
    if (!convAlgorithms.includes(algorithm))
      throw new Error(
        `Expected VGG_CONV_ALGO to be "auto", "direct", "winograd" or "winograd4" but received "${algorithm}"; ` +
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
    if (!convAlgorithms.includes(a))
      throw new TypeError(
        `Expected the conv algorithm to be "auto", "direct", "winograd" or "winograd4" but received ${String(a)}`,
      );
    this.addon.setConvAlgorithm(a);
  }

  /**
   * The kernel used for a layer's forward, input-gradient ("backward") or weight-gradient pass, e.g.
   * "winograd F(2x2,3x3)", for `vgg info`.
   */
  convKernel(g: Conv2dGeometry, pass: "forward" | "backward" | "weight"): string {
    checkConv(g);
    return pass === "weight" ? this.addon.convWeightKernel(g) : this.addon.convKernel(g, pass === "backward");
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
    checkArgs.gemm(c, a, b, m, n, k);
    this.addon.gemm(c, a, b, m, n, k, transA, transB, beta);
  }

  /** The packed copy lives in memory the addon allocates 64-byte aligned; it is freed when collected. */
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
    checkArgs.gemm(c, a, b, m, n, k);
    this.addon.gemmBf16(c, a, b, m, n, k, transA, transB, beta);
  }

  roundBf16(y: Float32Array, x: Float32Array): void {
    expectLength("y", y, x.length);
    this.addon.roundBf16(y, x);
  }

  conv2dForwardBf16(
    y: Float32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
    relu: boolean,
  ): boolean {
    checkArgs.conv2dForward(y, x, w, bias, g);
    return this.addon.conv2dForwardBf16(y, x, w, bias, g, relu);
  }

  conv2dReluMaxPool2dForwardBf16(
    y: Float32Array,
    argmax: Int32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
  ): boolean {
    checkArgs.conv2dReluMaxPool2dForward(y, argmax, x, w, bias, g);
    return this.addon.conv2dReluMaxPool2dForwardBf16(y, argmax, x, w, bias, g);
  }

  conv2dBackwardInputBf16(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null = null,
  ): boolean {
    checkArgs.conv2dBackwardInput(dx, dy, w, g, reluMask);
    return this.addon.conv2dBackwardInputBf16(dx, dy, w, g, reluMask);
  }

  conv2dBackwardWeightBf16(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): boolean {
    checkArgs.conv2dBackwardWeight(dw, db, dy, x, g);
    return this.addon.conv2dBackwardWeightBf16(dw, db, dy, x, g);
  }

  gemmPackB(b: Float32Array, n: number, k: number, transB: boolean): Float32Array {
    expectSize("n", n);
    expectSize("k", k);
    expectLength("B", b, k * n);
    return this.addon.gemmPackB(b, n, k, transB);
  }

  gemmPackedB(
    c: Float32Array,
    a: Float32Array,
    packed: Float32Array,
    m: number,
    n: number,
    k: number,
    beta: 0 | 1,
  ): void {
    checkArgs.gemmPackedB(c, a, packed, m, n, k);
    this.addon.gemmPackedB(c, a, packed, m, n, k, beta);
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
    this.addon.conv2dForward(y, x, w, bias, g, relu);
  }

  /** The Winograd and few-taps kernels pool in their output; other kernels answer false. */
  conv2dReluMaxPool2dForward(
    y: Float32Array,
    argmax: Int32Array,
    x: Float32Array,
    w: Float32Array,
    bias: Float32Array | null,
    g: Conv2dGeometry,
  ): boolean {
    checkArgs.conv2dReluMaxPool2dForward(y, argmax, x, w, bias, g);
    return this.addon.conv2dReluMaxPool2dForward(y, argmax, x, w, bias, g);
  }

  /** The few-taps kernel (a grayscale first layer) takes its gradient from the pooled one; others answer false. */
  conv2dReluMaxPool2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    argmax: Int32Array,
    reluY: Float32Array | null,
    x: Float32Array,
    g: Conv2dGeometry,
  ): boolean {
    checkArgs.conv2dReluMaxPool2dBackwardWeight(dw, db, dy, argmax, reluY, x, g);
    return this.addon.conv2dReluMaxPool2dBackwardWeight(dw, db, dy, argmax, reluY, x, g);
  }

  conv2dBackwardInput(
    dx: Float32Array,
    dy: Float32Array,
    w: Float32Array,
    g: Conv2dGeometry,
    reluMask: Float32Array | null = null,
  ): void {
    checkArgs.conv2dBackwardInput(dx, dy, w, g, reluMask);
    this.addon.conv2dBackwardInput(dx, dy, w, g, reluMask);
  }

  conv2dBackwardWeight(
    dw: Float32Array,
    db: Float32Array | null,
    dy: Float32Array,
    x: Float32Array,
    g: Conv2dGeometry,
  ): void {
    checkArgs.conv2dBackwardWeight(dw, db, dy, x, g);
    this.addon.conv2dBackwardWeight(dw, db, dy, x, g);
  }

  maxPool2dForward(y: Float32Array, argmax: Int32Array, x: Float32Array, g: Pool2dGeometry): void {
    checkArgs.maxPool2dForward(y, argmax, x, g);
    this.addon.maxPool2dForward(y, argmax, x, g);
  }

  maxPool2dBackward(
    dx: Float32Array,
    dy: Float32Array,
    argmax: Int32Array,
    g: Pool2dGeometry,
    reluOut: Float32Array | null = null,
  ): void {
    checkArgs.maxPool2dBackward(dx, dy, argmax, g, reluOut);
    this.addon.maxPool2dBackward(dx, dy, argmax, g, reluOut);
  }

  relu(y: Float32Array, x: Float32Array): void {
    checkArgs.relu(y, x);
    this.addon.relu(y, x);
  }

  reluBackward(dx: Float32Array, dy: Float32Array, y: Float32Array): void {
    checkArgs.reluBackward(dx, dy, y);
    this.addon.reluBackward(dx, dy, y);
  }

  dropoutMask(mask: Float32Array, p: number, keep: number, state: Uint32Array): void {
    if (!(p >= 0 && p <= 1))
      throw new RangeError(`Expected p to be a probability in [0, 1] but received ${p}`);
    expectLength("state", state, 4);
    this.addon.dropoutMask(mask, p, keep, state);
  }

  mul(y: Float32Array, x: Float32Array, mask: Float32Array): void {
    checkArgs.mul(y, x, mask);
    this.addon.mul(y, x, mask);
  }

  addInPlace(y: Float32Array, x: Float32Array): void {
    checkArgs.addInPlace(y, x);
    this.addon.addInPlace(y, x);
  }

  addRowBias(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
    checkArgs.addRowBias(y, bias, rows, cols);
    this.addon.addRowBias(y, bias, rows, cols);
  }

  softmaxCrossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    n: number,
    c: number,
  ): number {
    checkArgs.softmaxCrossEntropy(dlogits, logits, targets, n, c);
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
    relu = false,
  ): void {
    checkArgs.batchNormForwardTrain(y, saveMean, saveInvStd, x, gamma, beta, n, c, hw);
    this.addon.batchNormForwardTrain(y, saveMean, saveInvStd, x, gamma, beta, n, c, hw, eps, relu);
  }

  channelAffine(
    y: Float32Array,
    x: Float32Array,
    scale: Float32Array,
    shift: Float32Array,
    n: number,
    c: number,
    hw: number,
    relu = false,
  ): void {
    checkArgs.channelAffine(y, x, scale, shift, n, c, hw);
    this.addon.channelAffine(y, x, scale, shift, n, c, hw, relu);
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
    checkArgs.batchNormBackward(dx, dy, x, n, c, hw);
    this.addon.batchNormBackward(dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd, n, c, hw);
  }

  sgdStep(param: Float32Array, grad: Float32Array, momentumBuf: Float32Array | null, o: SgdOptions): void {
    checkArgs.sgdStep(param, grad, momentumBuf, o);
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
export function nativeInfo(): NativeInfo & { available: boolean; reason?: string; bf16Path: string } {
  const addon = loadNativeAddon();
  if (addon instanceof Error)
    return {
      available: false,
      reason: addon.message,
      isa: "none",
      bestIsa: "none",
      cpuFeatures: [],
      threads: 0,
      cpuHasAvx2Fma: false,
      gemmKernel: "none",
      kernels: {},
      sparseGemmCalls: 0,
      kernelCache: "",
      bf16Path: "none",
    };
  return { available: true, ...addon.info(), bf16Path: addon.bf16Path() };
}
