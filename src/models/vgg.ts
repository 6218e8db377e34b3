// The VGG family as data plus one builder. A conv architecture is a list of (numConvs, outChannels)
// blocks; each block is numConvs x (3x3 conv, padding 1, [BatchNorm], ReLU) followed by a 2x2 max-pool.
// Two layouts share the builder: d2l's (one Sequential: blocks, Flatten, classifier) and torchvision's
// (features / avgpool / classifier), so either's state dict keys match PyTorch's one to one.
import { noGrad } from "../autograd.js";
import * as init from "../nn/init.js";
import {
  AdaptiveAvgPool2d,
  BatchNorm2d,
  Conv2d,
  Dropout,
  Flatten,
  Linear,
  MaxPool2d,
  ReLU,
} from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { Sequential } from "../nn/sequential.js";
import { flatten, flattenShape } from "../ops/shape.js";
import { formatShape, type Tensor } from "../tensor.js";

export type ConvArch = readonly (readonly [numConvs: number, outChannels: number])[];

/** Simonyan & Zisserman's configurations A, B, D and E. */
export const vggArchs = {
  vgg11: [
    [1, 64],
    [1, 128],
    [2, 256],
    [2, 512],
    [2, 512],
  ],
  vgg13: [
    [2, 64],
    [2, 128],
    [2, 256],
    [2, 512],
    [2, 512],
  ],
  vgg16: [
    [2, 64],
    [2, 128],
    [3, 256],
    [3, 512],
    [3, 512],
  ],
  vgg19: [
    [2, 64],
    [2, 128],
    [4, 256],
    [4, 512],
    [4, 512],
  ],
} as const satisfies Record<string, ConvArch>;

export type VggName = keyof typeof vggArchs;
export type Layout = "d2l" | "torchvision";

export interface VggOptions {
  /** Input channels (1 for Fashion-MNIST, 3 for ImageNet). */
  inChannels?: number;
  numClasses?: number;
  /** Input height and width the classifier is sized for (d2l layout). */
  inputSize?: number;
  /** Divides every channel count, as d2l's small_conv_arch (ratio 4 -> 16, 32, 64, 128, 128). */
  widthRatio?: number;
  batchNorm?: boolean;
  dropout?: number;
  /** Hidden width of the two fully connected layers. */
  classifierWidth?: number;
  layout?: Layout;
}

export interface VggConfig {
  convArch: [number, number][];
  inChannels: number;
  numClasses: number;
  inputSize: number;
  widthRatio: number;
  batchNorm: boolean;
  dropout: number;
  classifierWidth: number;
  layout: Layout;
}

/** Parses "vgg11" or "1x64,1x128,2x256" into a conv architecture. */
export function parseArch(arch: string): ConvArch {
  if (arch in vggArchs) return vggArchs[arch as VggName];
  const blocks = arch.split(",").map((b) => b.trim().split("x").map(Number));
  if (
    blocks.length === 0 ||
    blocks.some((b) => b.length !== 2 || !b.every((v) => Number.isInteger(v) && v > 0))
  )
    throw new RangeError(
      `Expected an architecture name (${Object.keys(vggArchs).join(", ")}) or blocks like "1x64,1x128,2x256" but received "${arch}"`,
    );
  return blocks.map((b) => [b[0], b[1]] as const);
}

export function resolveConfig(convArch: ConvArch, options: VggOptions = {}): VggConfig {
  const widthRatio = options.widthRatio ?? 1;
  const cfg: VggConfig = {
    convArch: convArch.map(([n, c]) => [n, Math.floor(c / widthRatio)]),
    inChannels: options.inChannels ?? 1,
    numClasses: options.numClasses ?? 10,
    inputSize: options.inputSize ?? 224,
    widthRatio,
    batchNorm: options.batchNorm ?? false,
    dropout: options.dropout ?? 0.5,
    classifierWidth: options.classifierWidth ?? 4096,
    layout: options.layout ?? "d2l",
  };
  const bad = (what: string, v: unknown) => new RangeError(`Expected ${what} but received ${v}`);
  if (convArch.length === 0) throw bad("at least one block", "an empty architecture");
  if (!(widthRatio >= 1)) throw bad("widthRatio >= 1", widthRatio);
  if (cfg.convArch.some(([, c]) => c < 1))
    throw bad(
      `channel counts that stay >= 1 after dividing by widthRatio ${widthRatio}`,
      JSON.stringify(convArch),
    );
  for (const [k, v] of [
    ["inChannels", cfg.inChannels],
    ["numClasses", cfg.numClasses],
    ["classifierWidth", cfg.classifierWidth],
  ] as const)
    if (!Number.isInteger(v) || v < 1) throw bad(`${k} to be a positive integer`, v);
  if (!(cfg.dropout >= 0 && cfg.dropout <= 1)) throw bad("dropout in [0, 1]", cfg.dropout);
  const minSize = 2 ** convArch.length;
  if (!Number.isInteger(cfg.inputSize) || cfg.inputSize < minSize)
    throw bad(`inputSize to be an integer >= ${minSize} (one halving per block)`, cfg.inputSize);
  checkModelSize(cfg);
  return cfg;
}

/** The largest tensor a Float32Array can hold here, and the most parameter memory a model may take. */
export const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;
export const MAX_MODEL_BYTES = 16 * 2 ** 30;

/** Refuses, before allocating anything, a configuration whose parameters cannot fit in memory. */
function checkModelSize(cfg: VggConfig): void {
  let inC = cfg.inChannels;
  const sizes: [string, number][] = [];
  for (const [n, c] of cfg.convArch) {
    for (let i = 0; i < n; i++) {
      sizes.push([`Conv2d(${inC}, ${c})`, c * inC * 9 + c]);
      inC = c;
    }
  }
  const s = cfg.layout === "torchvision" ? 7 : featureSize(cfg.inputSize, cfg.convArch.length);
  const w = cfg.classifierWidth;
  sizes.push(
    [`Linear(${inC * s * s}, ${w})`, inC * s * s * w],
    [`Linear(${w}, ${w})`, w * w],
    [`Linear(${w}, ${cfg.numClasses})`, w * cfg.numClasses],
  );
  const [name, largest] = sizes.reduce((a, b) => (b[1] > a[1] ? b : a));
  const total = sizes.reduce((t, [, n]) => t + n, 0);
  if (largest > MAX_TENSOR_ELEMENTS || total * 4 > MAX_MODEL_BYTES)
    throw new RangeError(
      `Expected a model whose parameters fit in memory (at most ${MAX_MODEL_BYTES / 2 ** 30} GiB, ${MAX_TENSOR_ELEMENTS} values per tensor) ` +
        `but this configuration needs ${(total / 1e9).toFixed(2)} billion parameters (${name} alone has ${largest.toLocaleString("en-US")}); ` +
        "hint: use a smaller inputSize (the classifier grows with its square), classifierWidth or channel counts",
    );
}

/** Spatial size after the blocks: each 2x2/stride-2 max-pool halves (flooring) the size. */
export function featureSize(inputSize: number, numBlocks: number): number {
  let s = inputSize;
  for (let i = 0; i < numBlocks; i++) s = Math.floor(s / 2);
  return s;
}

function convLayers(numConvs: number, inChannels: number, outChannels: number, batchNorm: boolean): Module[] {
  const layers: Module[] = [];
  for (let i = 0; i < numConvs; i++) {
    layers.push(new Conv2d(inChannels, outChannels, 3, { padding: 1 }));
    if (batchNorm) layers.push(new BatchNorm2d(outChannels));
    layers.push(new ReLU());
    inChannels = outChannels;
  }
  layers.push(new MaxPool2d(2, 2));
  return layers;
}

/** d2l's vgg_block: numConvs x (3x3 conv, padding 1, ReLU), then a 2x2 max-pool with stride 2. */
export function vggBlock(
  numConvs: number,
  inChannels: number,
  outChannels: number,
  options: { batchNorm?: boolean } = {},
) {
  return new Sequential(...convLayers(numConvs, inChannels, outChannels, options.batchNorm ?? false));
}

function classifier(inFeatures: number, cfg: VggConfig): Module[] {
  const w = cfg.classifierWidth;
  return [
    new Linear(inFeatures, w),
    new ReLU(),
    new Dropout(cfg.dropout),
    new Linear(w, w),
    new ReLU(),
    new Dropout(cfg.dropout),
    new Linear(w, cfg.numClasses),
  ];
}

function checkInput(shape: readonly number[], cfg: VggConfig, fixedSize: boolean): void {
  const [, c, h, w] = shape;
  const size = cfg.inputSize;
  const ndim = shape.length;
  const ok = ndim === 4 && c === cfg.inChannels && (!fixedSize || (h === size && w === size));
  if (ok && fixedSize) return;
  if (ok && h >= 2 ** cfg.convArch.length && w >= 2 ** cfg.convArch.length) return;
  const expected = fixedSize ? `[N, ${cfg.inChannels}, ${size}, ${size}]` : `[N, ${cfg.inChannels}, H, W]`;
  let hint = "";
  if (ndim === 4 && c !== cfg.inChannels)
    hint = `; hint: the model takes ${cfg.inChannels}-channel images (build it with inChannels: ${c} for these)`;
  else if (ndim === 4 && fixedSize)
    hint = `; hint: resize the images to ${size}x${size} (e.g. --resize ${size}) or build the model with inputSize: ${h}`;
  else if (ndim === 4)
    hint = `; hint: images must be at least ${2 ** cfg.convArch.length}x${2 ** cfg.convArch.length}`;
  throw new RangeError(
    `Expected input of shape ${expected} for VGG but received ${formatShape(shape)}${hint}`,
  );
}

/** d2l's layout: Sequential(block_0..block_k, Flatten, Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear). */
export class VGG extends Sequential {
  constructor(readonly config: VggConfig) {
    let inC = config.inChannels;
    const blocks = config.convArch.map(([n, c]) => {
      const blk = new Sequential(...convLayers(n, inC, c, config.batchNorm));
      inC = c;
      return blk;
    });
    const s = featureSize(config.inputSize, blocks.length);
    super(...blocks, new Flatten(), ...classifier(inC * s * s, config));
  }

  override forward(x: Tensor): Tensor {
    checkInput(x.shape, this.config, true);
    return super.forward(x);
  }

  override outputShape(input: readonly number[]): number[] {
    checkInput(input, this.config, true);
    return super.outputShape(input);
  }

  /** The conv trunk's output (N, C, s, s), before Flatten. */
  forwardFeatures(x: Tensor): Tensor {
    return this.blockOutputs(x).at(-1)!;
  }

  /** The output of every block, for perceptual losses and feature extraction. */
  blockOutputs(x: Tensor): Tensor[] {
    checkInput(x.shape, this.config, true);
    const outs: Tensor[] = [];
    for (let i = 0; i < this.config.convArch.length; i++) outs.push((x = this[i].forward(x)));
    return outs;
  }

  override describe(): string {
    return "VGG";
  }
}

/** torchvision's layout: features (flat Sequential), avgpool (adaptive 7x7), classifier. */
export class VGGTorchvision extends Module {
  features: Sequential;
  avgpool: AdaptiveAvgPool2d;
  classifier: Sequential;

  constructor(readonly config: VggConfig) {
    super();
    const layers: Module[] = [];
    let inC = config.inChannels;
    for (const [n, c] of config.convArch) {
      layers.push(...convLayers(n, inC, c, config.batchNorm));
      inC = c;
    }
    this.features = new Sequential(...layers);
    this.avgpool = new AdaptiveAvgPool2d(7);
    this.classifier = new Sequential(...classifier(inC * 7 * 7, config));
    // torchvision's initialisation.
    noGrad(() => {
      for (const m of this.modules()) {
        if (m instanceof Conv2d) {
          init.kaimingNormal_(m.weight, { mode: "fan_out", nonlinearity: "relu" });
          if (m.bias) init.zeros_(m.bias);
        } else if (m instanceof BatchNorm2d) {
          init.ones_(m.weight);
          init.zeros_(m.bias);
        } else if (m instanceof Linear) {
          init.normal_(m.weight, 0, 0.01);
          if (m.bias) init.zeros_(m.bias);
        }
      }
    });
  }

  forward(x: Tensor): Tensor {
    checkInput(x.shape, this.config, false);
    return this.classifier.forward(flatten(this.avgpool.forward(this.features.forward(x)), 1));
  }

  forwardFeatures(x: Tensor): Tensor {
    checkInput(x.shape, this.config, false);
    return this.features.forward(x);
  }

  override outputShape(input: readonly number[]): number[] {
    checkInput(input, this.config, false);
    const pooled = this.avgpool.outputShape(this.features.outputShape(input));
    return this.classifier.outputShape(flattenShape(pooled));
  }

  /** The output of every block (after each max-pool). */
  blockOutputs(x: Tensor): Tensor[] {
    checkInput(x.shape, this.config, false);
    const outs: Tensor[] = [];
    for (const layer of this.features) {
      x = layer.forward(x);
      if (layer instanceof MaxPool2d) outs.push(x);
    }
    return outs;
  }

  override describe(): string {
    return "VGG";
  }
}

export type VggModel = VGG | VGGTorchvision;

/** Builds a VGG network from a conv architecture (d2l's `vgg(conv_arch)`); the d2l layout by default. */
export function vgg(convArch: ConvArch, options: VggOptions & { layout: "torchvision" }): VGGTorchvision;
export function vgg(convArch: ConvArch, options?: VggOptions & { layout?: "d2l" }): VGG;
export function vgg(convArch: ConvArch, options?: VggOptions): VggModel;
export function vgg(convArch: ConvArch, options: VggOptions = {}): VggModel {
  const cfg = resolveConfig(convArch, options);
  return cfg.layout === "torchvision" ? new VGGTorchvision(cfg) : new VGG(cfg);
}

/**
 * Rebuilds a model from a stored configuration (a checkpoint's metadata), whose convArch already has the
 * width ratio applied; the ratio is kept in the config for the record.
 */
export function vggFromConfig(config: VggConfig): VggModel {
  const model = vgg(config.convArch, { ...config, widthRatio: 1 });
  model.config.widthRatio = config.widthRatio;
  return model;
}

/** A named architecture: vgg11, vgg13, vgg16 or vgg19 (torchvision defaults: 3 channels, 1000 classes, its layout). */
export function vggNamed(name: VggName, options: VggOptions = {}): VggModel {
  if (!(name in vggArchs))
    throw new RangeError(`Expected one of ${Object.keys(vggArchs).join(", ")} but received "${name}"`);
  return vgg(vggArchs[name], { inChannels: 3, numClasses: 1000, layout: "torchvision", ...options });
}

export const vgg11 = (o: VggOptions = {}) => vggNamed("vgg11", o);
export const vgg13 = (o: VggOptions = {}) => vggNamed("vgg13", o);
export const vgg16 = (o: VggOptions = {}) => vggNamed("vgg16", o);
export const vgg19 = (o: VggOptions = {}) => vggNamed("vgg19", o);
export const vgg11Bn = (o: VggOptions = {}) => vggNamed("vgg11", { ...o, batchNorm: true });
export const vgg13Bn = (o: VggOptions = {}) => vggNamed("vgg13", { ...o, batchNorm: true });
export const vgg16Bn = (o: VggOptions = {}) => vggNamed("vgg16", { ...o, batchNorm: true });
export const vgg19Bn = (o: VggOptions = {}) => vggNamed("vgg19", { ...o, batchNorm: true });
