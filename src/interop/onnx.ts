// ONNX export of a VGG model in inference form (batch norm with its running statistics, no dropout).
// The graph is encoded with onnx-proto (ONNX's message definitions on protobufjs); weights become
// initializers named by their state dict keys ("features.0.weight"), so the file reads like the checkpoint.
// The batch dimension is symbolic ("batch"); height and width are fixed, because the classifier's input
// width depends on them.
import onnxProto from "onnx-proto";
import { VGG, type VggModel } from "../models/vgg.js";
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
import type { Module } from "../nn/module.js";
import type { Tensor } from "../tensor.js";

const { onnx } = onnxProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;

export const ONNX_INPUT = "input";
export const ONNX_OUTPUT = "logits";
export const DEFAULT_OPSET = 13;
/** IR version 7 is the one ONNX 1.8 wrote with opset 13; every runtime since reads it. */
const IR_VERSION = 7;

export interface OnnxExportOptions {
  /** Input height and width; defaults to the model's inputSize (224 for torchvision models). */
  inputSize?: number;
  /** Operator set version, 13 or later. */
  opset?: number;
  producerVersion?: string;
}

type Pair = number | readonly [number, number];
const pair = (p: Pair): [number, number] => (typeof p === "number" ? [p, p] : [p[0], p[1]]);

const AttributeType = onnx.AttributeProto.AttributeType;
const ints = (name: string, v: number[]): IAttributeProto => ({ name, type: AttributeType.INTS, ints: v });
const int = (name: string, v: number): IAttributeProto => ({ name, type: AttributeType.INT, i: v });
const float = (name: string, v: number): IAttributeProto => ({ name, type: AttributeType.FLOAT, f: v });

function floatTensor(
  name: string,
  t: Tensor | { shape: readonly number[]; data: Float32Array },
): ITensorProto {
  const data = Float32Array.from(t.data); // a copy: rawData is little-endian bytes, as on every host we run on
  return {
    name,
    dims: [...t.shape],
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(data.buffer),
  };
}

/**
 * How AdaptiveAvgPool2d(7) is written for a trunk output of `size` x `size`: nothing when it is 7, an
 * AveragePool with kernel = stride = size / 7 when 7 divides it (then every output window is exactly one
 * such block, as adaptive pooling computes), and an error otherwise.
 */
export function adaptivePoolPlan(
  size: number,
  inputSize: number,
  numBlocks: number,
  out = 7,
): { kernel: number } | null {
  if (size === out) return null;
  if (size % out === 0) return { kernel: size / out };
  const good = [1, 2].map((k) => out * k * 2 ** numBlocks);
  throw new RangeError(
    `Expected a trunk output that is a multiple of ${out} (so AdaptiveAvgPool2d(${out}) is an ONNX AveragePool) but received ${size}x${size} for a ${inputSize}x${inputSize} input; hint: export with --input-size ${good[0]} or ${good[1]}`,
  );
}

/** Encodes `model` (in eval form) as an ONNX ModelProto. */
export function exportOnnx(model: VggModel, options: OnnxExportOptions = {}): Uint8Array {
  const cfg = model.config;
  const opset = options.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < 13)
    throw new RangeError(`Expected an ONNX opset >= 13 but received ${opset}`);
  const size = options.inputSize ?? cfg.inputSize;
  const d2l = model instanceof VGG;
  if (d2l && size !== cfg.inputSize)
    throw new RangeError(
      `Expected inputSize ${cfg.inputSize} for this d2l-layout model (its classifier is sized for it) but received ${size}; hint: only torchvision-layout models take other sizes`,
    );
  // Shape checks (channels, minimum size) come from the model's own validation.
  model.outputShape([1, cfg.inChannels, size, size]);

  const state = model.stateDict();
  const nodes: INodeProto[] = [];
  const initializers: ITensorProto[] = [];
  const param = (name: string): string => {
    const t = state.get(name);
    if (!t) throw new Error(`Expected a state dict entry "${name}" but the model has none`);
    initializers.push(floatTensor(name, t));
    return name;
  };
  let current = ONNX_INPUT;
  let shape: number[] = [1, cfg.inChannels, size, size];
  let counter = 0;
  const emit = (opType: string, path: string, inputs: string[], attribute: IAttributeProto[] = []) => {
    const output = `${path || opType.toLowerCase()}.out${counter++}`;
    nodes.push({ name: `${opType}_${path}`, opType, input: inputs, output: [output], attribute });
    current = output;
  };

  const leaves = model.namedModules().filter(([, m]) => m.namedChildren().length === 0);
  for (const [path, m] of leaves) {
    emitLayer(path, m);
    shape = m.outputShape(shape);
    // torchvision flattens between avgpool and classifier in forward(), not with a module.
    if (m instanceof AdaptiveAvgPool2d) {
      emit("Flatten", "flatten", [current], [int("axis", 1)]);
      shape = [shape[0], shape[1] * shape[2] * shape[3]];
    }
  }

  function emitLayer(path: string, m: Module): void {
    if (m instanceof Conv2d) {
      const [ph, pw] = pair(m.padding);
      const inputs = [current, param(`${path}.weight`)];
      if (m.bias) inputs.push(param(`${path}.bias`));
      emit("Conv", path, inputs, [
        ints("kernel_shape", m.kernelSize),
        ints("strides", pair(m.stride)),
        ints("pads", [ph, pw, ph, pw]),
      ]);
    } else if (m instanceof BatchNorm2d) {
      const names = ["weight", "bias", "running_mean", "running_var"].map((n) => param(`${path}.${n}`));
      emit("BatchNormalization", path, [current, ...names], [float("epsilon", m.eps)]);
    } else if (m instanceof ReLU) {
      emit("Relu", path, [current]);
    } else if (m instanceof MaxPool2d) {
      const [ph, pw] = pair(m.padding);
      emit(
        "MaxPool",
        path,
        [current],
        [
          ints("kernel_shape", pair(m.kernelSize)),
          ints("strides", pair(m.stride)),
          ints("pads", [ph, pw, ph, pw]),
        ],
      );
    } else if (m instanceof AdaptiveAvgPool2d) {
      const [oh, ow] = pair(m.outputSize);
      if (oh !== ow || shape[2] !== shape[3])
        throw new RangeError(
          `Expected a square trunk output and pool size but received ${shape[2]}x${shape[3]} -> ${oh}x${ow}`,
        );
      const plan = adaptivePoolPlan(shape[2], size, cfg.convArch.length, oh);
      if (plan)
        emit(
          "AveragePool",
          path,
          [current],
          [ints("kernel_shape", [plan.kernel, plan.kernel]), ints("strides", [plan.kernel, plan.kernel])],
        );
    } else if (m instanceof Flatten) {
      if (m.startDim !== 1 || (m.endDim !== -1 && m.endDim !== shape.length - 1))
        throw new RangeError(`Expected Flatten(1, -1) but received Flatten(${m.startDim}, ${m.endDim})`);
      emit("Flatten", path, [current], [int("axis", 1)]);
    } else if (m instanceof Linear) {
      const inputs = [current, param(`${path}.weight`)];
      if (m.bias) inputs.push(param(`${path}.bias`));
      emit("Gemm", path, inputs, [int("transB", 1)]);
    } else if (!(m instanceof Dropout)) {
      // Dropout is the identity at inference.
      throw new TypeError(
        `Expected a VGG layer (Conv2d, BatchNorm2d, ReLU, MaxPool2d, ...) but received ${m.describe()}`,
      );
    }
  }

  // The last node writes the graph output.
  const last = nodes.at(-1);
  if (!last?.output) throw new Error("Expected at least one layer in the model but received none");
  last.output = [ONNX_OUTPUT];

  const valueInfo = (name: string, dims: (number | string)[]) => ({
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === "string" ? { dimParam: d } : { dimValue: d })) },
      },
    },
  });
  const modelProto = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: "", version: opset }],
    producerName: "vgg-ts",
    producerVersion: options.producerVersion ?? "0.1.0",
    docString: `VGG (${cfg.layout} layout) exported by vgg-ts`,
    metadataProps: [{ key: "vgg-ts.config", value: JSON.stringify(cfg) }],
    graph: {
      name: "vgg",
      node: nodes,
      initializer: initializers,
      input: [valueInfo(ONNX_INPUT, ["batch", cfg.inChannels, size, size])],
      output: [valueInfo(ONNX_OUTPUT, ["batch", shape[1]])],
    },
  });
  return onnx.ModelProto.encode(modelProto).finish();
}

/** Reads back an encoded model (for tests and `vgg export` to report what it wrote). */
export function decodeOnnx(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}
