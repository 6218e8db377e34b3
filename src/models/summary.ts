// Model summary: the d2l shape walk over the top-level layers, then a per-layer table of output
// shapes, parameters and multiply-accumulates. Shapes are inferred (Module.outputShape), not computed,
// so summarising VGG-19 at 224 is instant on any backend.
import { Flatten } from "../nn/layers.js";
import type { Module } from "../nn/module.js";
import { VGGTorchvision, type VggModel } from "./vgg.js";

export interface SummaryRow {
  name: string;
  layer: string;
  outputShape: number[];
  params: number;
  macs: number;
}

export interface ModelSummary {
  inputShape: number[];
  /** One entry per top-level layer, as d2l's `for blk in net: X = blk(X)` loop prints. */
  walk: { layer: string; outputShape: number[] }[];
  rows: SummaryRow[];
  totalParams: number;
  trainableParams: number;
  totalMacs: number;
}

/** The top-level layers in execution order (torchvision's forward flattens between avgpool and classifier). */
export function topLevelLayers(model: VggModel): [string, Module][] {
  if (model instanceof VGGTorchvision)
    return [
      ["features", model.features],
      ["avgpool", model.avgpool],
      ["flatten", new Flatten()],
      ["classifier", model.classifier],
    ];
  return [...model].map((m, i) => [String(i), m]);
}

function leaves(name: string, m: Module): [string, Module][] {
  const children = m.namedChildren();
  if (children.length === 0) return [[name, m]];
  return children.flatMap(([child, c]) => leaves(name ? `${name}.${child}` : child, c));
}

function ownParams(m: Module): number {
  return Object.values(m).reduce(
    (s, v) => s + (v && typeof v === "object" && "requiresGrad" in v && v.requiresGrad ? v.size : 0),
    0,
  );
}

export function summarize(model: VggModel, inputShape: number[]): ModelSummary {
  model.outputShape(inputShape); // validates the whole walk first, with the model's own hint
  const walk: ModelSummary["walk"] = [];
  const rows: SummaryRow[] = [];
  let shape = inputShape;
  for (const [name, top] of topLevelLayers(model)) {
    for (const [leafName, leaf] of leaves(name, top)) {
      const macs = leaf.macs(shape);
      shape = leaf.outputShape(shape);
      rows.push({
        name: leafName,
        layer: leaf.describe(),
        outputShape: shape,
        params: ownParams(leaf),
        macs,
      });
    }
    walk.push({ layer: top.constructor.name, outputShape: shape });
  }
  const params = model.parameters();
  return {
    inputShape,
    walk,
    rows,
    totalParams: params.reduce((s, p) => s + p.size, 0),
    trainableParams: params.filter((p) => p.requiresGrad).reduce((s, p) => s + p.size, 0),
    totalMacs: rows.reduce((s, r) => s + r.macs, 0),
  };
}
