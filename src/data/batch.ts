// Turns a list of example indices into a ready batch (augment, scale to [0, 1], resize, normalise). The same
// function runs in the loader's worker thread and on its synchronous path, so both give identical batches.

import { Generator } from "../rng.js";
import { type AugmentOptions, augmentPlane, BilinearResizer } from "./transforms.js";

export interface BatchConfig {
  rows: number;
  cols: number;
  outH: number;
  outW: number;
  normalize?: { mean: number; std: number };
  augment?: AugmentOptions;
}

export interface PreparedBatch {
  x: Float32Array<ArrayBuffer>; // (n, 1, outH, outW)
  y: Int32Array<ArrayBuffer>; // (n)
}

/** Mixes integers into one 32-bit seed (murmur3 finaliser per part), so (seed, epoch, batch) streams differ. */
export function mixSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    let k = Math.imul(part >>> 0, 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    h ^= k ^ Math.floor(part / 2 ** 32);
    h = Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Caches the resizer (its taps and scratch) between batches of the same geometry. */
export class BatchPreparer {
  private resizer?: BilinearResizer;
  private plane: Float32Array;

  constructor(
    private readonly images: Uint8Array, // (count, rows, cols)
    private readonly labels: Uint8Array, // (count)
    private readonly config: BatchConfig,
  ) {
    const { rows, cols, outH, outW } = config;
    if (rows !== outH || cols !== outW) this.resizer = new BilinearResizer(rows, cols, outH, outW);
    this.plane = new Float32Array(rows * cols);
  }

  /** The batch of the given examples; `augmentSeed` seeds this batch's augmentation draws. */
  prepare(indices: Int32Array, augmentSeed: number): PreparedBatch {
    const { rows, cols, outH, outW, augment, normalize } = this.config;
    const n = indices.length;
    const inPlane = rows * cols;
    const outPlane = outH * outW;
    const x = new Float32Array(n * outPlane);
    const y = new Int32Array(n);
    const rng = augment ? new Generator(augmentSeed) : undefined;
    const plane = this.plane;
    for (let b = 0; b < n; b++) {
      const idx = indices[b];
      y[b] = this.labels[idx];
      const target = this.resizer ? plane : x;
      const offset = this.resizer ? 0 : b * outPlane;
      if (augment && rng) {
        augmentPlane(this.images, idx * inPlane, rows, cols, augment, rng, target, offset);
      } else {
        const s = idx * inPlane;
        for (let i = 0; i < inPlane; i++) target[offset + i] = this.images[s + i] / 255;
      }
      this.resizer?.resizePlane(plane, 0, x, b * outPlane);
    }
    if (normalize) {
      const { mean, std } = normalize;
      for (let i = 0; i < x.length; i++) x[i] = (x[i] - mean) / std;
    }
    return { x, y };
  }
}
