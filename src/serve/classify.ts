// The two ends of the image classifier, shared by `vgg predict` and `vgg serve` so both give the same
// numbers: an image becomes the model's input (Fashion-MNIST style, or ImageNet's transform for a
// torchvision RGB model), and a row of logits becomes ranked classes with probabilities.
import { FASHION_MNIST_CLASSES } from "../data/fashion-mnist.js";
import { IMAGENET_CLASSES } from "../interop/imagenet-classes.js";
import {
  decodeImage,
  decodeImageGrey,
  MAX_PIXELS,
  preprocessGrey,
  preprocessImagenet,
  preprocessSmall,
  type RgbImage,
} from "../io/image.js";
import { decodePngNative, decodePngNativeGrey } from "../io/png-native.js";
import type { VggConfig } from "../models/vgg.js";

export interface RankedClass {
  class: number;
  name: string;
  probability: number;
}

/** ImageNet's evaluation transform applies to torchvision-layout RGB models; every other model is small. */
function isImagenet(cfg: VggConfig): boolean {
  return cfg.layout === "torchvision" && cfg.inChannels === 3;
}

/**
 * The images' side: `resize` (which the command line checks against a d2l model's input size), else a
 * small model's input size, else 224 for an ImageNet model, whose crop is taken from the shorter side
 * scaled to side * 256/224 (torchvision's 256 -> 224).
 */
export function imageSide(cfg: VggConfig, resize?: number): number {
  return resize ?? (isImagenet(cfg) ? 224 : cfg.inputSize);
}

/** One image's input shape (C, H, W). */
export function inputShape(cfg: VggConfig, resize?: number): [number, number, number] {
  const size = imageSide(cfg, resize);
  return [cfg.inChannels, size, size];
}

/** The model's input for one image, (C, H, W) as inputShape gives. */
export function imageToInput(img: RgbImage, cfg: VggConfig, invert = false, resize?: number): Float32Array {
  const size = imageSide(cfg, resize);
  return isImagenet(cfg)
    ? preprocessImagenet(img, Math.round((size * 256) / 224), size)
    : preprocessSmall(img, cfg.inChannels, size, invert);
}

/**
 * The model's input for an image file's bytes: imageToInput(decodeImage(bytes, name), ...), the same floats
 * and errors, a 1-channel small model's straight from the luma plane (decodeImageGrey); a PNG by the native
 * addon's decoder where it loads (the same floats, in half the time: io/png-native.ts).
 */
export function bytesToInput(
  bytes: Uint8Array,
  name: string,
  cfg: VggConfig,
  invert = false,
  resize?: number,
): Float32Array {
  if (isImagenet(cfg) || cfg.inChannels !== 1)
    return imageToInput(decodePngNative(bytes, MAX_PIXELS) ?? decodeImage(bytes, name), cfg, invert, resize);
  const grey = decodePngNativeGrey(bytes, MAX_PIXELS) ?? decodeImageGrey(bytes, name);
  return preprocessGrey(grey, imageSide(cfg, resize), invert);
}

/** Names of the classes where the class count says which dataset it is, else null ("class i"). */
export function classNames(cfg: VggConfig): readonly string[] | null {
  return cfg.numClasses === 10 ? FASHION_MNIST_CLASSES : cfg.numClasses === 1000 ? IMAGENET_CLASSES : null;
}

/** Softmax in float64, shifted by the maximum so that exp cannot overflow. */
export function softmax(logits: Float32Array): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (const v of logits) if (v > max) max = v;
  const e = Float64Array.from(logits, (v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** The k most probable classes of one row of logits, most probable first. */
export function topClasses(logits: Float32Array, k: number, names: readonly string[] | null): RankedClass[] {
  const p = softmax(logits);
  return [...p.keys()]
    .sort((a, b) => p[b] - p[a])
    .slice(0, k)
    .map((i) => ({ class: i, name: names?.[i] ?? `class ${i}`, probability: p[i] }));
}
