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

/** The top classes; `classNames` (Fashion-MNIST's, from classes.json) names them when the count matches. */
export function classify(
  model: VggModel,
  img: RgbImage,
  classNames: readonly string[] | null,
  invert = false,
  top = 5,
): Ranked[] {
  const cfg = model.config;
  if (cfg.layout === "torchvision" && cfg.inChannels === 3)
    throw new Error(
      "Expected a Fashion-MNIST model but received an ImageNet-layout one; the page shows Fashion-MNIST classes",
    );
  const x = preprocessSmall(img, cfg.inChannels, cfg.inputSize, invert);
  const logits = noGrad(() =>
    model.forward(new Tensor(x, [1, cfg.inChannels, cfg.inputSize, cfg.inputSize])),
  ).data;
  const max = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  const names = classNames?.length === cfg.numClasses ? classNames : null;
  return e
    .map((v, i) => ({ class: i, name: names?.[i] ?? `class ${i}`, probability: v / sum }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, top);
}
