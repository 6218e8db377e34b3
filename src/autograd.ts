// Reverse-mode automatic differentiation. An op that records produces a tensor whose `node` lists its
// inputs and a closure mapping the output gradient to one gradient per input. backward() walks the
// graph in reverse topological order, accumulates into leaves' `.grad`, and frees the graph.
//
// Gradients are host Float32Arrays or, for tensors on a device, DeviceStorage (device.ts): an op records
// a host closure (record) or a device one (recordDevice), and the walk only clones, adds and frees them.
//
// In the core's import order (shape < memory < device < autograd < tensor) it sits below Tensor and knows
// it only as GradTensor, so tensor.ts can offer backward() without the two modules importing each other.
import type { DeviceStorage } from "./device.js";
import { give } from "./memory.js";
import { formatShape, type Shape } from "./shape.js";

/** A gradient: host memory, or storage on the device the tensor lives on. */
export type GradBuffer = Float32Array | DeviceStorage;

/** What autograd needs of a tensor (tensor.ts's Tensor is one). */
export interface GradTensor {
  readonly shape: Shape;
  readonly size: number;
  requiresGrad: boolean;
  node: GradNode | null;
  /** Adds g into the leaf's gradient; `owned`: the buffer is the walk's own and may become it. */
  accumulateGrad(g: GradBuffer, owned: boolean): void;
  /** Frees the tensor's memory if a Sequential produced it and never returned it (memory.ts). */
  releaseInternal(): void;
}

export interface GradNode {
  /** Op name, for error messages and debugging. */
  readonly op: string;
  readonly inputs: readonly GradTensor[];
  /** Maps dL/dout to dL/dinput for each input (null where an input needs no gradient). */
  readonly backward: (gradOut: GradBuffer) => readonly (GradBuffer | null)[];
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording the graph (inference), as torch.no_grad(). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Whether an op over these inputs must record a node. */
export function needsGrad(...inputs: (GradTensor | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t?.requiresGrad) return true;
  return false;
}

/** Attaches a backward node to `out` when any input requires a gradient, and returns `out`. */
export function record<T extends GradTensor>(
  out: T,
  op: string,
  inputs: readonly GradTensor[],
  backward: (gradOut: Float32Array) => readonly (Float32Array | null)[],
): T {
  if (needsGrad(...inputs)) {
    out.requiresGrad = true;
    out.node = {
      op,
      inputs,
      backward: (g) => {
        if (!(g instanceof Float32Array)) throw mixedDevices(op, "a device", "the host");
        return backward(g);
      },
    };
  }
  return out;
}

/** record() for an op whose output lives on a device: its backward maps device gradients. */
export function recordDevice<T extends GradTensor>(
  out: T,
  op: string,
  inputs: readonly GradTensor[],
  backward: (gradOut: DeviceStorage) => readonly (DeviceStorage | null)[],
): T {
  if (needsGrad(...inputs)) {
    out.requiresGrad = true;
    out.node = {
      op,
      inputs,
      backward: (g) => {
        if (g instanceof Float32Array) throw mixedDevices(op, "the host", "a device");
        return backward(g);
      },
    };
  }
  return out;
}

function mixedDevices(op: string, got: string, want: string): Error {
  return new Error(
    `Expected the gradient of ${op} on ${want} but received one on ${got}: a graph's tensors must all be on one device (move them with .to())`,
  );
}

function cloneGrad(g: GradBuffer): GradBuffer {
  return g instanceof Float32Array ? g.slice() : g.clone();
}

/** into += g. */
function addGrad(into: GradBuffer, g: GradBuffer): void {
  if (into instanceof Float32Array && g instanceof Float32Array)
    for (let j = 0; j < into.length; j++) into[j] += g[j];
  else if (!(into instanceof Float32Array) && !(g instanceof Float32Array)) into.addInPlace(g);
  else throw mixedDevices("a sum of gradients", "mixed devices", "one device");
}

function freeGrad(g: GradBuffer): void {
  if (g instanceof Float32Array) give(g);
  else g.release();
}

function topologicalOrder(root: GradTensor): GradTensor[] {
  const order: GradTensor[] = [];
  const visited = new Set<GradTensor>();
  // Iterative DFS: VGG graphs are shallow, but user graphs need not be.
  const stack: [GradTensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const next = inputs[i];
      if (next.node && !visited.has(next)) {
        visited.add(next);
        stack.push([next, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

export interface BackwardOptions {
  /**
   * Called once per leaf as soon as its gradient is final (its last consumer has run), while the rest
   * of the walk continues: data-parallel training starts summing it across processes there.
   */
  onLeafGradient?: (leaf: GradTensor) => void;
}

/** For each position k of `order`, the leaves whose last consumer in the walk (high k to low) is k. */
function lastLeafUses(order: readonly GradTensor[]): Map<number, GradTensor[]> {
  const seen = new Set<GradTensor>();
  const byStep = new Map<number, GradTensor[]>();
  for (let k = 0; k < order.length; k++)
    for (const input of order[k].node?.inputs ?? [])
      if (!input.node && input.requiresGrad && !seen.has(input)) {
        seen.add(input);
        byStep.set(k, [...(byStep.get(k) ?? []), input]);
      }
  return byStep;
}

/**
 * Backpropagates from root. Without `gradient`, root must be a scalar and `unit` gives the seed 1 on the
 * root's device (Tensor.backward passes it).
 */
export function backward(
  root: GradTensor,
  gradient?: { data: GradBuffer; shape: Shape },
  options: BackwardOptions = {},
  unit: () => GradBuffer = () => Float32Array.of(1),
): void {
  if (!root.requiresGrad)
    throw new Error(
      "backward() called on a tensor that does not require grad (no input had requiresGrad set)",
    );
  let seed: GradBuffer;
  if (gradient) {
    if (gradient.data.length !== root.size)
      throw new RangeError(
        `Expected a gradient of shape ${formatShape(root.shape)} but received ${formatShape(gradient.shape)}`,
      );
    seed = cloneGrad(gradient.data);
  } else {
    if (root.size !== 1)
      throw new Error(
        `backward() without a gradient needs a scalar but the tensor has shape ${formatShape(root.shape)}`,
      );
    seed = unit();
  }
  const grads = new Map<GradTensor, GradBuffer>([[root, seed]]);
  // Buffers this walk allocated and may add into; others may be shared between inputs.
  const owned = new Set<GradBuffer>([seed]);
  const order = topologicalOrder(root);
  const onLeaf = options.onLeafGradient;
  const lastUses = onLeaf ? lastLeafUses(order) : null;
  for (let k = order.length - 1; k >= 0; k--) {
    const t = order[k];
    const g = grads.get(t);
    grads.delete(t);
    const node = t.node;
    if (!g) {
      for (const leaf of lastUses?.get(k) ?? []) onLeaf!(leaf);
      continue;
    }
    if (!node) {
      t.accumulateGrad(g, owned.has(g));
      onLeaf?.(t);
      continue;
    }
    const inputGrads = node.backward(g);
    for (let i = 0; i < node.inputs.length; i++) {
      const input = node.inputs[i];
      const gi = inputGrads[i];
      if (!gi || !input.requiresGrad) continue;
      // A buffer the op allocated for this input alone is ours to keep; one passed through (reshape,
      // add) or handed to several inputs is shared and is copied before anyone writes to it.
      const fresh = gi !== g && inputGrads.indexOf(gi) === i && inputGrads.lastIndexOf(gi) === i;
      if (fresh) owned.add(gi);
      if (!input.node) {
        input.accumulateGrad(gi, fresh);
        continue;
      }
      let prev = grads.get(input);
      if (!prev) {
        grads.set(input, gi);
        continue;
      }
      if (!owned.has(prev)) {
        prev = cloneGrad(prev);
        owned.add(prev);
        grads.set(input, prev);
      }
      addGrad(prev, gi);
      if (fresh) freeGrad(gi);
    }
    // g has been consumed: a buffer this walk allocated that was not passed on to an input is dead.
    if (owned.has(g) && !inputGrads.includes(g)) {
      owned.delete(g);
      freeGrad(g);
    }
    // Free the graph as we go, so activations can be collected (or reused, see memory.ts).
    t.node = null;
    t.releaseInternal();
    for (const leaf of lastUses?.get(k) ?? []) onLeaf!(leaf);
  }
}
