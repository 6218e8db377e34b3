// A model described by flat, flag-like fields (what `vgg train --arch vgg11 --ratio 4 ...` and `fit({...})`
// take), turned into the builder's options. The command line and the training API share it.
import { type Layout, parseArch, type VggModel, type VggOptions, vgg } from "./vgg.js";

export interface ModelSpec {
  /** vgg11|vgg13|vgg16|vgg19, or blocks like "1x64,1x128,2x256,2x512,2x512". */
  arch: string;
  /** Divides every channel count (d2l's small_conv_arch is ratio 4). */
  ratio: number;
  inChannels?: number;
  inputSize?: number;
  numClasses?: number;
  batchNorm?: boolean;
  layout: Layout;
  dropout?: number;
  classifierWidth?: number;
  /** The images' height and width: the size the model takes. */
  resize?: number;
}

/**
 * The input size a new model is built for: inputSize and resize name the same thing for a d2l model
 * (its classifier is sized for the images), so they must agree when both are given.
 */
export function inputSizeOf(s: Pick<ModelSpec, "inputSize" | "resize" | "layout">): number | undefined {
  if (
    s.inputSize !== undefined &&
    s.resize !== undefined &&
    s.inputSize !== s.resize &&
    s.layout !== "torchvision"
  )
    throw new Error(
      `--input-size ${s.inputSize} differs from --resize ${s.resize}; a d2l model is built for the size of its images, so give one of them`,
    );
  return s.inputSize ?? s.resize;
}

export function vggOptions(s: ModelSpec): VggOptions {
  const tv = s.layout === "torchvision";
  return {
    inChannels: s.inChannels ?? (tv ? 3 : 1),
    numClasses: s.numClasses ?? (tv ? 1000 : 10),
    inputSize: inputSizeOf(s) ?? 224,
    widthRatio: s.ratio,
    batchNorm: s.batchNorm ?? false,
    dropout: s.dropout,
    classifierWidth: s.classifierWidth,
    layout: s.layout,
  };
}

export function buildModel(s: ModelSpec): VggModel {
  return vgg(parseArch(s.arch), vggOptions(s));
}
