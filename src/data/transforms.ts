// Image transforms on single-channel planes stored row-major: uint8 -> [0, 1] floats, bilinear resize as
// torch computes it, normalisation, and the seeded training augmentation (padded random crop, flip).

import type { Generator } from "../rng.js";

/** uint8 pixels to floats in [0, 1] (as torchvision's ToTensor: x / 255). */
export function toFloat(pixels: Uint8Array, out = new Float32Array(pixels.length)): Float32Array {
  if (out.length !== pixels.length) {
    throw new RangeError(`Expected an output of ${pixels.length} floats but received ${out.length}`);
  }
  for (let i = 0; i < pixels.length; i++) out[i] = pixels[i] / 255;
  return out;
}

/** In place: x = (x - mean) / std. */
export function normalize(x: Float32Array, mean: number, std: number): Float32Array {
  checkNormalization(mean, std);
  for (let i = 0; i < x.length; i++) x[i] = (x[i] - mean) / std;
  return x;
}

export function checkNormalization(mean: number, std: number): void {
  if (!Number.isFinite(mean))
    throw new RangeError(`Expected a finite normalisation mean but received ${mean}`);
  if (!(std > 0) || !Number.isFinite(std)) {
    throw new RangeError(`Expected a positive finite normalisation std but received ${std}`);
  }
}

/** For one axis: the two source taps and their weights for every output position. */
export interface LinearTaps {
  i0: Int32Array;
  i1: Int32Array;
  w0: Float32Array;
  w1: Float32Array;
}

/**
 * Source taps of `F.interpolate(mode="bilinear", align_corners=False)` along one axis of `inSize` -> `outSize`
 * pixels. Half-pixel centres: src = (dst + 0.5) * in/out - 0.5, clamped at 0. Precision as torch's CPU
 * kernel for float tensors: the ratio in/out is a float32, the source coordinate and weights are computed in
 * double (its accumulate type) and the weights stored as float32; this picks the same taps and weights.
 */
export function linearTaps(inSize: number, outSize: number): LinearTaps {
  const scale = Math.fround(inSize / outSize);
  const taps: LinearTaps = {
    i0: new Int32Array(outSize),
    i1: new Int32Array(outSize),
    w0: new Float32Array(outSize),
    w1: new Float32Array(outSize),
  };
  for (let d = 0; d < outSize; d++) {
    if (inSize === outSize) {
      taps.i0[d] = taps.i1[d] = d;
      taps.w0[d] = 1;
      continue;
    }
    const src = Math.max(scale * (d + 0.5) - 0.5, 0);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    const lambda1 = Math.min(Math.max(src - i0, 0), 1);
    taps.i0[d] = i0;
    taps.i1[d] = i0 < inSize - 1 ? i0 + 1 : i0;
    taps.w1[d] = lambda1;
    taps.w0[d] = 1 - lambda1;
  }
  return taps;
}

function checkSize(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`Expected ${what} to be a positive integer but received ${value}`);
  }
}

/**
 * Resizes (inH, inW) planes to (outH, outW). Separable: each needed source row is first interpolated along
 * the width, then pairs of those rows along the height, the order torch's CPU kernel uses; taps and scratch
 * are computed once per resizer.
 */
export class BilinearResizer {
  private readonly ty: LinearTaps;
  private readonly tx: LinearTaps;
  private readonly rows: Float64Array; // (inH, outW): source rows resized along the width

  constructor(
    readonly inH: number,
    readonly inW: number,
    readonly outH: number,
    readonly outW: number,
  ) {
    checkSize("the input height", inH);
    checkSize("the input width", inW);
    checkSize("the output height", outH);
    checkSize("the output width", outW);
    this.ty = linearTaps(inH, outH);
    this.tx = linearTaps(inW, outW);
    this.rows = new Float64Array(inH * outW);
  }

  /** Resizes the plane at src[srcOffset..] into dst[dstOffset..]. */
  resizePlane(src: Float32Array, srcOffset: number, dst: Float32Array, dstOffset: number): void {
    const { inH, inW, outH, outW, rows } = this;
    const { i0: x0, i1: x1, w0: wx0, w1: wx1 } = this.tx;
    const { i0: y0, i1: y1, w0: wy0, w1: wy1 } = this.ty;
    for (let y = 0; y < inH; y++) {
      const s = srcOffset + y * inW;
      const r = y * outW;
      for (let x = 0; x < outW; x++) rows[r + x] = src[s + x0[x]] * wx0[x] + src[s + x1[x]] * wx1[x];
    }
    for (let y = 0; y < outH; y++) {
      const a = y0[y] * outW;
      const b = y1[y] * outW;
      const wa = wy0[y];
      const wb = wy1[y];
      const d = dstOffset + y * outW;
      for (let x = 0; x < outW; x++) dst[d + x] = rows[a + x] * wa + rows[b + x] * wb;
    }
  }

  /** Resizes `planes` consecutive planes: src is (planes, inH, inW), the result (planes, outH, outW). */
  resize(
    src: Float32Array,
    planes: number,
    out = new Float32Array(planes * this.outH * this.outW),
  ): Float32Array {
    const inPlane = this.inH * this.inW;
    const outPlane = this.outH * this.outW;
    if (src.length !== planes * inPlane) {
      throw new RangeError(
        `Expected an input of ${planes} x ${this.inH} x ${this.inW} = ${planes * inPlane} floats but received ${src.length}`,
      );
    }
    if (out.length !== planes * outPlane) {
      throw new RangeError(`Expected an output of ${planes * outPlane} floats but received ${out.length}`);
    }
    for (let p = 0; p < planes; p++) this.resizePlane(src, p * inPlane, out, p * outPlane);
    return out;
  }
}

/**
 * Bilinear resize of (planes, inH, inW) to (planes, outH, outW), equal to torch's
 * `F.interpolate(x, size=(outH, outW), mode="bilinear", align_corners=False)` (no antialiasing).
 */
export function resizeBilinear(
  src: Float32Array,
  planes: number,
  inH: number,
  inW: number,
  outH: number,
  outW: number,
): Float32Array {
  return new BilinearResizer(inH, inW, outH, outW).resize(src, planes);
}

export interface AugmentOptions {
  /** Zero padding on every side before cropping back to the original size (0 disables the crop). */
  padding: number;
  /** Flip horizontally with probability 1/2. */
  flip: boolean;
}

export const DEFAULT_AUGMENT: AugmentOptions = { padding: 2, flip: true };

export function checkAugment(options: AugmentOptions): void {
  if (!Number.isInteger(options.padding) || options.padding < 0) {
    throw new RangeError(
      `Expected augmentation padding to be an integer >= 0 but received ${options.padding}`,
    );
  }
}

/**
 * Random crop with zero padding, then an optional horizontal flip, of one (h, w) uint8 plane into floats in
 * [0, 1]. Always draws three numbers (row shift, column shift, flip) so the stream stays aligned.
 * Output (y, x) = padded(y + dy, x' + dx) with x' = w - 1 - x when flipped, padded(i, j) = src(i - p, j - p).
 */
export function augmentPlane(
  src: Uint8Array,
  srcOffset: number,
  h: number,
  w: number,
  options: AugmentOptions,
  rng: Generator,
  dst: Float32Array,
  dstOffset: number,
): void {
  const p = options.padding;
  const dy = rng.int(2 * p + 1) - p;
  const dx = rng.int(2 * p + 1) - p;
  const flip = rng.random() < 0.5 && options.flip;
  for (let y = 0; y < h; y++) {
    const sy = y + dy;
    const d = dstOffset + y * w;
    if (sy < 0 || sy >= h) {
      dst.fill(0, d, d + w);
      continue;
    }
    const s = srcOffset + sy * w;
    for (let x = 0; x < w; x++) {
      const sx = (flip ? w - 1 - x : x) + dx;
      dst[d + x] = sx >= 0 && sx < w ? src[s + sx] / 255 : 0;
    }
  }
}
