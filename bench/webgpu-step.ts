// A whole SGD training step of a Sequential VGG (Conv2d+ReLU, MaxPool2d, Flatten, Linear, ReLU, Dropout,
// softmax cross-entropy) composed from the WebGPU kernels, with weights, activations, gradients and
// momentum resident on the device: what the core's device tensors are to do, written out by hand so the
// kernels are tested and timed as a step before that integration exists. Not a second training engine:
// only webgpu-step.test.ts (one step equals the CPU's) and this benchmark use it.
//
// `node dist/bench/webgpu-step.js [--size 32] [--batch 16] [--iters 3]` prints images/s of the d2l model
// (VGG-11/4, 1 input channel) on the adapter it finds, named in the output.
import { fileURLToPath } from "node:url";
import type { Conv2dGeometry, Pool2dGeometry } from "../src/backend/backend.js";
import type { DeviceArray } from "../src/backend/webgpu/buffers.js";
import { GpuContext } from "../src/backend/webgpu/context.js";
import { conv2dBackwardInput, conv2dBackwardWeight, conv2dForward } from "../src/backend/webgpu/conv2d.js";
import { addRowBias, dropoutMask, mul, relu, reluBackward } from "../src/backend/webgpu/elementwise.js";
import { gemm } from "../src/backend/webgpu/gemm.js";
import { softmaxCrossEntropy } from "../src/backend/webgpu/loss.js";
import { maxPool2dBackward, maxPool2dForward } from "../src/backend/webgpu/pool.js";
import { sgdStep } from "../src/backend/webgpu/sgd.js";
import { Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU } from "../src/nn/layers.js";
import type { Module } from "../src/nn/module.js";
import { conv2dGeometry } from "../src/ops/conv2d.js";
import { maxPool2dGeometry } from "../src/ops/pool.js";
import type { SgdConfig } from "../src/optim/sgd.js";
import type { Generator } from "../src/rng.js";
import type { Parameter } from "../src/tensor.js";

/** The leaf layers of a module tree, in forward order. */
function leaves(m: Module): Module[] {
  const children = m.namedChildren();
  return children.length === 0 ? [m] : children.flatMap(([, c]) => leaves(c));
}

interface DeviceParam {
  host: Parameter;
  value: DeviceArray;
  grad: DeviceArray;
  momentum: DeviceArray | null;
}

/** What the forward pass keeps for the backward pass, per layer. */
type Saved =
  | { kind: "conv"; layer: Conv2d; g: Conv2dGeometry; x: DeviceArray; y: DeviceArray; relu: boolean }
  | { kind: "pool"; g: Pool2dGeometry; argmax: DeviceArray }
  | { kind: "linear"; layer: Linear; x: DeviceArray; n: number; relu: DeviceArray | null }
  | { kind: "dropout"; mask: DeviceArray }
  | { kind: "relu"; y: DeviceArray };

export class WebGpuSequentialStep {
  private readonly layers: Module[];
  private readonly params = new Map<Parameter, DeviceParam>();
  private steps = 0;
  private ones: DeviceArray | null = null;

  constructor(
    readonly ctx: GpuContext,
    model: Module,
    private readonly sgd: SgdConfig,
  ) {
    this.layers = leaves(model);
    for (const layer of this.layers) {
      if (!(layer instanceof Conv2d || layer instanceof Linear || layer instanceof ReLU))
        if (!(layer instanceof MaxPool2d || layer instanceof Flatten || layer instanceof Dropout))
          throw new TypeError(`WebGpuSequentialStep has no kernels for ${layer.describe()}`);
      if (layer instanceof Conv2d || layer instanceof Linear)
        for (const p of [layer.weight, layer.bias])
          if (p)
            this.params.set(p, {
              host: p,
              value: ctx.upload(p.data),
              grad: ctx.pool.acquire(p.size),
              momentum: (sgd.momentum ?? 0) !== 0 ? ctx.pool.acquire(p.size) : null,
            });
    }
  }

  private param(p: Parameter): DeviceParam {
    return this.params.get(p) as DeviceParam;
  }

  /** One forward, backward and SGD update on a batch; returns the loss, still on the device. */
  step(images: Float32Array, shape: number[], targets: Int32Array, generator: Generator): DeviceArray {
    const ctx = this.ctx;
    const pool = ctx.pool;
    const n = shape[0];
    let x = ctx.upload(images);
    const labels = ctx.upload(targets);
    let s = [...shape];
    const saved: Saved[] = [];
    for (let i = 0; i < this.layers.length; i++) {
      const layer = this.layers[i];
      if (layer instanceof Conv2d) {
        const g = conv2dGeometry(s, layer.weight.shape, { stride: layer.stride, padding: layer.padding });
        const fuse = this.layers[i + 1] instanceof ReLU;
        const y = pool.acquire(g.n * g.cOut * g.outH * g.outW);
        const bias = layer.bias ? this.param(layer.bias).value : null;
        conv2dForward(ctx, y, x, this.param(layer.weight).value, bias, g, fuse);
        saved.push({ kind: "conv", layer, g, x, y, relu: fuse });
        if (fuse) i++;
        x = y;
        s = [g.n, g.cOut, g.outH, g.outW];
      } else if (layer instanceof MaxPool2d) {
        const g = maxPool2dGeometry(s, {
          kernelSize: layer.kernelSize,
          stride: layer.stride,
          padding: layer.padding,
        });
        const len = g.n * g.c * g.outH * g.outW;
        const [y, argmax] = [pool.acquire(len), pool.acquire(len, "i32")];
        maxPool2dForward(ctx, y, argmax, x, g);
        saved.push({ kind: "pool", g, argmax });
        x = y;
        s = [g.n, g.c, g.outH, g.outW];
      } else if (layer instanceof Flatten) {
        s = [s[0], s.slice(1).reduce((a, b) => a * b, 1)];
      } else if (layer instanceof Linear) {
        const out = layer.outFeatures;
        const y = pool.acquire(n * out);
        gemm(ctx, y, x, this.param(layer.weight).value, n, out, layer.inFeatures, false, true, 0);
        if (layer.bias) addRowBias(ctx, y, this.param(layer.bias).value, n, out);
        const fuse = this.layers[i + 1] instanceof ReLU;
        if (fuse) relu(ctx, y, y);
        saved.push({ kind: "linear", layer, x, n, relu: fuse ? y : null });
        if (fuse) i++;
        x = y;
        s = [n, out];
      } else if (layer instanceof ReLU) {
        const y = pool.acquire(x.length);
        relu(ctx, y, x);
        saved.push({ kind: "relu", y });
        x = y;
      } else if (layer instanceof Dropout && layer.training && layer.p > 0) {
        const mask = pool.acquire(x.length);
        dropoutMask(ctx, mask, layer.p, layer.p === 1 ? 0 : 1 / (1 - layer.p), generator.stateWords());
        const y = pool.acquire(x.length);
        mul(ctx, y, x, mask);
        saved.push({ kind: "dropout", mask });
        x = y;
      }
    }
    const [c] = [s[1]];
    const loss = pool.acquire(1);
    let dy = pool.acquire(n * c);
    softmaxCrossEntropy(ctx, dy, loss, x, labels, n, c);
    pool.release(labels);
    for (let k = saved.length - 1; k >= 0; k--) {
      const e = saved[k];
      const first = k === 0;
      if (e.kind === "conv") {
        if (e.relu) reluBackward(ctx, dy, dy, e.y);
        const w = this.param(e.layer.weight);
        const b = e.layer.bias ? this.param(e.layer.bias).grad : null;
        conv2dBackwardWeight(ctx, w.grad, b, dy, e.x, e.g);
        let dx: DeviceArray | null = null;
        if (!first) {
          dx = pool.acquire(e.x.length);
          conv2dBackwardInput(ctx, dx, dy, w.value, e.g);
        }
        pool.release(dy);
        pool.release(e.y);
        if (first) pool.release(e.x);
        dy = dx as DeviceArray;
      } else if (e.kind === "pool") {
        const g = e.g;
        const dx = pool.acquire(g.n * g.c * g.h * g.w);
        maxPool2dBackward(ctx, dx, dy, e.argmax, g);
        pool.release(dy);
        pool.release(e.argmax);
        dy = dx;
      } else if (e.kind === "linear") {
        const { layer, n: rows } = e;
        if (e.relu) reluBackward(ctx, dy, dy, e.relu);
        const w = this.param(layer.weight);
        // dW (out, in) = dy^T (out, n) x (n, in); db (1, out) = ones (1, n) dy (n, out); dx = dy W.
        gemm(ctx, w.grad, dy, e.x, layer.outFeatures, layer.inFeatures, rows, true, false, 0);
        if (layer.bias)
          gemm(
            ctx,
            this.param(layer.bias).grad,
            this.onesOf(rows),
            dy,
            1,
            layer.outFeatures,
            rows,
            false,
            false,
            0,
          );
        const dx = pool.acquire(rows * layer.inFeatures);
        gemm(ctx, dx, dy, w.value, rows, layer.inFeatures, layer.outFeatures, false, false, 0);
        pool.release(dy);
        if (e.relu) pool.release(e.relu);
        pool.release(e.x);
        dy = dx;
      } else if (e.kind === "dropout") {
        mul(ctx, dy, dy, e.mask);
        pool.release(e.mask);
      } else {
        reluBackward(ctx, dy, dy, e.y);
      }
    }
    const firstStep = this.steps++ === 0;
    for (const p of this.params.values())
      sgdStep(ctx, p.value, p.grad, p.momentum, {
        lr: this.sgd.lr,
        momentum: this.sgd.momentum ?? 0,
        dampening: this.sgd.dampening ?? 0,
        weightDecay: this.sgd.weightDecay ?? 0,
        nesterov: this.sgd.nesterov ?? false,
        firstStep,
      });
    ctx.flush();
    return loss;
  }

  private onesOf(n: number): DeviceArray {
    if (this.ones?.length !== n) this.ones = this.ctx.upload(new Float32Array(n).fill(1));
    return this.ones;
  }

  /** A parameter's device value and gradient, read back (tests). */
  async read(p: Parameter): Promise<{ value: Float32Array; grad: Float32Array }> {
    const d = this.param(p);
    return { value: await this.ctx.readFloat32(d.value), grad: await this.ctx.readFloat32(d.grad) };
  }
}

async function main(): Promise<void> {
  const { vggNamed } = await import("../src/models/vgg.js");
  const { Generator } = await import("../src/rng.js");
  const arg = (name: string, fallback: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i < 0 ? fallback : Number(process.argv[i + 1]);
  };
  const [size, batch, iters] = [arg("size", 32), arg("batch", 16), arg("iters", 3)];
  const ctx = await GpuContext.create();
  const model = vggNamed("vgg11", { widthRatio: 4, inChannels: 1, inputSize: size, layout: "d2l" });
  const step = new WebGpuSequentialStep(ctx, model, { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
  const gen = new Generator(0);
  const images = Float32Array.from({ length: batch * size * size }, () => gen.random());
  const targets = Int32Array.from({ length: batch }, () => gen.int(10));
  const shape = [batch, 1, size, size];
  await ctx.readFloat32(step.step(images, shape, targets, gen)); // warm-up: pipelines compile
  const submits = ctx.submits;
  const t0 = performance.now();
  let loss = 0;
  for (let i = 0; i < iters; i++) loss = (await ctx.readFloat32(step.step(images, shape, targets, gen)))[0];
  const seconds = (performance.now() - t0) / 1000;
  const a = ctx.adapter;
  console.log(`adapter: ${a.vendor} ${a.architecture} (${a.description || a.device})`);
  console.log(
    `train ${size}/${batch} on WebGPU: ${((batch * iters) / seconds).toFixed(1)} images/s ` +
      `(${((seconds / iters) * 1000).toFixed(0)} ms a step, ${(ctx.submits - submits) / iters} submits a step, loss ${loss.toFixed(4)})`,
  );
  ctx.destroy();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
