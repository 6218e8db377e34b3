// Module: the base of every layer. Children and parameters are found by walking the module's own
// fields in declaration order (as tinygrad's get_state_dict), so `features.0.weight`-style names come
// from the object tree itself; buffers (BatchNorm's running statistics) are registered explicitly under
// PyTorch's names.
import type { DeviceName } from "../device.js";
import { deviceNamed, formatShape, Parameter, type Tensor } from "../tensor.js";

export abstract class Module {
  training = true;
  /** Non-trainable state saved in the state dict, under PyTorch's names. */
  protected readonly buffers = new Map<string, Tensor>();

  abstract forward(x: Tensor): Tensor;

  /** Direct children, named by field (or index, for Sequential). */
  namedChildren(): [string, Module][] {
    return Object.entries(this).filter((e): e is [string, Module] => e[1] instanceof Module);
  }

  /** This module and every descendant, with dotted path names ("" for this one). */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.namedChildren())
      out.push(...child.namedModules(prefix ? `${prefix}.${name}` : name));
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  namedParameters(): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    for (const [path, m] of this.namedModules())
      for (const [name, value] of Object.entries(m))
        if (value instanceof Parameter) out.push([path ? `${path}.${name}` : name, value]);
    return out;
  }

  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules())
      for (const [name, t] of m.buffers) out.push([path ? `${path}.${name}` : name, t]);
    return out;
  }

  /** Sets training mode on this module and every descendant (dropout, batch norm). */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /**
   * Moves every parameter and buffer to `device` in place, as torch's module.to(device): the tensors keep
   * their identity (an optimiser made before still holds them) and lose their gradients. "webgpu" needs
   * `await useBackend("webgpu")` first; back to the host is asynchronous: `await model.cpu()`.
   */
  to(device: DeviceName): this {
    if (device === "cpu") {
      if (this.device() !== "cpu")
        throw new Error(`The model lives on ${this.device()}: move it back with await model.cpu()`);
      return this;
    }
    const d = deviceNamed(device);
    // BatchNorm2d counts its batches on the host (a number the kernels never read).
    for (const [name, t] of this.stateDict()) if (!name.endsWith("num_batches_tracked")) t.moveTo_(d);
    return this;
  }

  /** Moves every parameter and buffer back to host memory (the reverse of to("webgpu")). */
  async cpu(): Promise<this> {
    for (const [, t] of this.stateDict()) await t.moveToHost_();
    return this;
  }

  /** Where the first parameter lives; "cpu" for a module without any. */
  device(): DeviceName {
    return this.parameters()[0]?.device ?? "cpu";
  }

  /** Clears every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.parameters()) p.clearGrad();
  }

  /** Parameters and buffers by dotted name; the tensors are shared, not copied. */
  stateDict(): Map<string, Tensor> {
    return new Map<string, Tensor>([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Copies values into this module's parameters and buffers. With strict (the default), missing and
   * unexpected keys are errors; shape mismatches always are. Nothing is modified when it throws.
   */
  loadStateDict(
    state: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>,
    options: { strict?: boolean } = {},
  ): { missingKeys: string[]; unexpectedKeys: string[] } {
    const strict = options.strict ?? true;
    const own = this.stateDict();
    const missingKeys = [...own.keys()].filter((k) => !state.has(k));
    const unexpectedKeys = [...state.keys()].filter((k) => !own.has(k));
    const problems: string[] = [];
    if (strict && missingKeys.length > 0)
      problems.push(`Missing key(s) in state dict: ${missingKeys.join(", ")}.`);
    if (strict && unexpectedKeys.length > 0)
      problems.push(`Unexpected key(s) in state dict: ${unexpectedKeys.join(", ")}.`);
    for (const [key, t] of own) {
      const src = state.get(key);
      if (!src) continue;
      const same = src.shape.length === t.shape.length && src.shape.every((d, i) => d === t.shape[i]);
      // A scalar buffer (num_batches_tracked) may be stored as [] or [1].
      if (!same && !(t.size === 1 && src.data.length === 1))
        problems.push(
          `size mismatch for ${key}: copying a param with shape ${formatShape(src.shape)}, the shape in current model is ${formatShape(t.shape)}.`,
        );
    }
    if (problems.length > 0)
      throw new Error(
        `Error(s) in loading state dict for ${this.constructor.name}:\n  ${problems.join("\n  ")}`,
      );
    for (const [key, t] of own) {
      const src = state.get(key);
      if (!src) continue;
      t.copyFrom_(src.data);
    }
    return { missingKeys, unexpectedKeys };
  }

  /**
   * The output shape for an input shape, without computing anything (used by `vgg summary`); it runs
   * the same checks as forward, so a bad shape fails here with the same message.
   */
  outputShape(input: readonly number[]): number[] {
    return [...input];
  }

  /** Multiply-accumulates of one forward pass for an input shape (convolutions and linear layers). */
  macs(_input: readonly number[]): number {
    return 0;
  }

  /** A one-line description, as PyTorch's extra_repr: `Conv2d(1, 64, kernel_size=3, padding=1)`. */
  describe(): string {
    return `${this.constructor.name}()`;
  }
}
