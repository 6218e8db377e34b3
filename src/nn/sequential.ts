// Sequential: children stored under their indices ("0", "1", ...), so parameter names are PyTorch's,
// `net[0]` works, and `for (const blk of net)` walks the layers as in the d2l shape loop.
import type { Tensor } from "../tensor.js";
import { BatchNorm2d, Conv2d, MaxPool2d, ReLU } from "./layers.js";
import { Module } from "./module.js";

/** How many Sequential forwards are running: only the outermost one hands its output to the caller. */
let nesting = 0;

export class Sequential extends Module implements Iterable<Module> {
  [index: number]: Module;
  readonly length: number;

  constructor(...layers: Module[]) {
    super();
    layers.forEach((layer, i) => {
      this[i] = layer;
    });
    this.length = layers.length;
  }

  /**
   * Runs the layers in order; a Conv2d followed by a ReLU (and a MaxPool2d) runs as one fused op (same
   * result; see ops/conv-relu-pool.ts), and so does a BatchNorm2d followed by a ReLU.
   * The outputs between layers never leave this call, so their buffers are reused (memory.ts): at once
   * when no graph was recorded, otherwise when backward has run the op that produced them.
   */
  forward(input: Tensor): Tensor {
    let x = input;
    nesting++;
    try {
      for (let i = 0; i < this.length; i++) {
        const layer = this[i];
        let next: Tensor;
        const pool = this[i + 2];
        if (layer instanceof Conv2d && this[i + 1] instanceof ReLU && pool instanceof MaxPool2d) {
          next = layer.forwardReluPool(x, pool);
          i += 2;
        } else if ((layer instanceof Conv2d || layer instanceof BatchNorm2d) && this[i + 1] instanceof ReLU) {
          next = layer.forwardRelu(x);
          i++;
        } else next = layer.forward(x);
        if (x !== input && next !== x) {
          x.markInternal();
          // Nothing recorded a use of x (no graph), and next does not share its memory: x is dead.
          if (!next.node && !next.sharesMemoryWith(x)) x.releaseInternal();
        }
        x = next;
      }
    } finally {
      nesting--;
    }
    if (nesting === 0) x.markExposed();
    return x;
  }

  *[Symbol.iterator](): Iterator<Module> {
    for (let i = 0; i < this.length; i++) yield this[i];
  }

  /** Replaces the layer at index i (e.g. a new classifier head for fine-tuning). */
  set(i: number, layer: Module): void {
    if (!(i >= 0 && i < this.length && Number.isInteger(i)))
      throw new RangeError(`Expected an index in [0, ${this.length}) but received ${i}`);
    this[i] = layer;
  }

  override outputShape(input: readonly number[]): number[] {
    let shape = [...input];
    for (const layer of this) shape = layer.outputShape(shape);
    return shape;
  }

  override describe(): string {
    return "Sequential";
  }
}
