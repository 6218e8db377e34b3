// The classifier's computation, free of the DOM so Node tests can run it too: build the model a weights
// file describes, turn decoded RGBA pixels into the network's input exactly as `vgg predict` does
// (preprocessSmall), and rank the classes.
import { noGrad } from "../../autograd.js";
import { preprocessSmall, type RgbImage, rgbaToImage } from "../../io/image.js";

export { rgbaToImage };

import type { SafetensorsContents } from "../../io/safetensors.js";
import { type VggConfig, type VggModel, vggFromConfig } from "../../models/vgg.js";
import { Tensor } from "../../tensor.js";

/** Largest upload the page accepts, and the largest decoded picture. */
export const MAX_FILE_BYTES = 20 * 1024 * 1024;
export const MAX_PIXELS = 40_000_000;

export interface Ranked {
  class: number;
  name: string;
  probability: number;
}

/** Builds the model from its configuration (as the server reports it) and loads the weights. */
export function buildModel(config: VggConfig, contents: SafetensorsContents): VggModel {
  const model = vggFromConfig(config);
  model.loadStateDict(contents.tensors);
  model.eval();
  return model;
}

/** Checks an upload before decoding; returns the message to show, or null when it may be decoded. */
export function checkUpload(file: { name: string; size: number; type: string }): string | null {
  if (file.size === 0) return `${file.name} is empty; choose a PNG, JPEG, GIF or WebP picture`;
  if (file.size > MAX_FILE_BYTES)
    return `${file.name} is ${(file.size / 1e6).toFixed(1)} MB; pictures up to ${MAX_FILE_BYTES / 1024 / 1024} MB are accepted`;
  if (file.type !== "" && !file.type.startsWith("image/"))
    return `${file.name} is not a picture (its type is ${file.type}); choose a PNG, JPEG, GIF or WebP file`;
  return null;
}

function input(model: VggModel, img: RgbImage, invert: boolean): Tensor {
  const cfg = model.config;
  if (cfg.layout === "torchvision" && cfg.inChannels === 3)
    throw new Error(
      "Expected a Fashion-MNIST model but received an ImageNet-layout one; the page shows Fashion-MNIST classes",
    );
  const x = preprocessSmall(img, cfg.inChannels, cfg.inputSize, invert);
  return new Tensor(x, [1, cfg.inChannels, cfg.inputSize, cfg.inputSize]);
}

/** The top classes of one row of logits, by softmax probability. */
export function rank(
  logits: Float32Array,
  numClasses: number,
  classNames: readonly string[] | null,
  top = 5,
): Ranked[] {
  const max = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  const names = classNames?.length === numClasses ? classNames : null;
  return e
    .map((v, i) => ({ class: i, name: names?.[i] ?? `class ${i}`, probability: v / sum }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, top);
}

/** The top classes; `classNames` (Fashion-MNIST's, from classes.json) names them when the count matches. */
export function classify(
  model: VggModel,
  img: RgbImage,
  classNames: readonly string[] | null,
  invert = false,
  top = 5,
): Ranked[] {
  const x = input(model, img, invert);
  const logits = noGrad(() => model.forward(x)).data;
  return rank(logits, model.config.numClasses, classNames, top);
}

/** classify for a model on any device: the picture goes where the weights are, the logits are read back. */
export async function classifyAsync(
  model: VggModel,
  img: RgbImage,
  classNames: readonly string[] | null,
  invert = false,
  top = 5,
): Promise<Ranked[]> {
  const device = model.device();
  const host = input(model, img, invert);
  const x = device === "cpu" ? host : host.to(device);
  const logits = await noGrad(() => model.forward(x)).dataAsync();
  return rank(logits, model.config.numClasses, classNames, top);
}
