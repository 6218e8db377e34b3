// Converting weights between d2l's layout (one Sequential of blocks, Flatten, classifier) and torchvision's
// (features / avgpool / classifier). The layers are the same; only the keys differ:
//   d2l "b.i.weight" (layer i of block b)  <->  torchvision "features.(offset of block b + i).weight"
//   d2l "(B + 1 + j).weight" (B blocks, Flatten at B)  <->  torchvision "classifier.j.weight"
// torchvision's adaptive 7x7 pooling is the identity only when the trunk output is 7x7, so a d2l model
// converts when its classifier takes C*7*7 features (inputSize 224 for five blocks).
import { featureSize, type Layout, type VggConfig, type VggModel, vgg } from "../models/vgg.js";
import type { Tensor } from "../tensor.js";

/** Layers in one block: numConvs x (conv, [batch norm], ReLU), then the max-pool. */
function blockLength(numConvs: number, batchNorm: boolean): number {
  return numConvs * (batchNorm ? 3 : 2) + 1;
}

/** Maps one state dict key between layouts; throws on a key that belongs to neither. */
export function convertKey(key: string, cfg: VggConfig, from: Layout, to: Layout): string {
  if (from === to) return key;
  const lengths = cfg.convArch.map(([n]) => blockLength(n, cfg.batchNorm));
  const offsets = lengths.map((_, b) => lengths.slice(0, b).reduce((a, v) => a + v, 0));
  const numBlocks = lengths.length;
  const parts = key.split(".");
  const bad = () =>
    new Error(
      `Expected a ${from}-layout VGG state dict key but received "${key}" (for ${JSON.stringify(cfg.convArch)})`,
    );
  if (from === "d2l") {
    const top = Number(parts[0]);
    if (!Number.isInteger(top)) throw bad();
    if (top < numBlocks) {
      const i = Number(parts[1]);
      if (!Number.isInteger(i) || i >= lengths[top]) throw bad();
      return ["features", String(offsets[top] + i), ...parts.slice(2)].join(".");
    }
    if (top <= numBlocks) throw bad(); // Flatten has no parameters
    return ["classifier", String(top - numBlocks - 1), ...parts.slice(1)].join(".");
  }
  const index = Number(parts[1]);
  if (!Number.isInteger(index)) throw bad();
  if (parts[0] === "classifier") return [String(numBlocks + 1 + index), ...parts.slice(2)].join(".");
  if (parts[0] !== "features") throw bad();
  let b = numBlocks - 1;
  while (b > 0 && offsets[b] > index) b--;
  if (index < 0 || index - offsets[b] >= lengths[b]) throw bad();
  return [String(b), String(index - offsets[b]), ...parts.slice(2)].join(".");
}

/**
 * The same network in the other layout, sharing no memory with `model`. A d2l model needs a 7x7 trunk
 * output; a torchvision model becomes a d2l model for inputs of 7 * 2^blocks (224 for five blocks).
 */
export function convertLayout(model: VggModel, to: Layout): VggModel {
  const cfg = model.config;
  const from = cfg.layout;
  if (from === to)
    throw new Error(`Expected a model in the other layout but it is already in the ${to} layout`);
  const numBlocks = cfg.convArch.length;
  const s = featureSize(cfg.inputSize, numBlocks);
  if (from === "d2l" && s !== 7)
    throw new RangeError(
      `Expected a d2l model whose trunk output is 7x7 (its classifier taking C*7*7 features, as torchvision's) but received ${s}x${s} for inputSize ${cfg.inputSize}; hint: only models built with --input-size ${7 * 2 ** numBlocks} convert to the torchvision layout`,
    );
  const inputSize = to === "d2l" ? 7 * 2 ** numBlocks : cfg.inputSize;
  const target = vgg(cfg.convArch, { ...cfg, widthRatio: 1, layout: to, inputSize });
  target.config.widthRatio = cfg.widthRatio;
  const tensors = new Map<string, Tensor>();
  for (const [key, t] of model.stateDict()) tensors.set(convertKey(key, cfg, from, to), t);
  target.loadStateDict(tensors); // copies
  return target;
}
