// Sequential: children stored under their indices ("0", "1", ...), so parameter names are PyTorch's,
// `net[0]` works, and `for (const blk of net)` walks the layers as in the d2l shape loop.
import type { Tensor } from "../tensor.js";
import { Conv2d, ReLU } from "./layers.js";
import { Module } from "./module.js";

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

  /** Runs the layers in order; a Conv2d followed by a ReLU runs as one fused pass (same result). */
  forward(x: Tensor): Tensor {
    for (let i = 0; i < this.length; i++) {
      const layer = this[i];
      if (layer instanceof Conv2d && this[i + 1] instanceof ReLU) {
        x = layer.forwardRelu(x);
        i++;
      } else x = layer.forward(x);
    }
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
