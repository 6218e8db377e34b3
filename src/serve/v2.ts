// The Open Inference Protocol (KServe v2 REST, as Triton, KServe and Seldon speak it) for one model:
// server and model metadata, and inference on FP32 tensors in JSON. The model has one input, "input"
// [-1, C, H, W], and two outputs, "logits" and "probabilities" [-1, classes]; tensor data may be given
// flat or nested, in row-major order, as the protocol allows.
import { HttpError } from "./body.js";
import { softmax } from "./classify.js";
import type { ModelService } from "./service.js";

export const INPUT_NAME = "input";
export const OUTPUT_NAMES = ["logits", "probabilities"] as const;
export const MODEL_VERSION = "1";
type OutputName = (typeof OUTPUT_NAMES)[number];

interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

export function serverMetadata(version: string): { name: string; version: string; extensions: string[] } {
  return { name: "vgg-ts", version, extensions: [] };
}

export function modelMetadata(svc: ModelService): {
  name: string;
  versions: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
} {
  const classes = svc.config.numClasses;
  return {
    name: svc.name,
    versions: [MODEL_VERSION],
    platform: "vgg-ts",
    inputs: [{ name: INPUT_NAME, datatype: "FP32", shape: [-1, ...svc.shape] }],
    outputs: OUTPUT_NAMES.map((name) => ({ name, datatype: "FP32", shape: [-1, classes] })),
  };
}

export interface InferRequest {
  id?: string;
  n: number;
  input: Float32Array;
  outputs: OutputName[];
}

const bad = (message: string) => new HttpError(400, message);

/** Copies nested or flat numbers into out, row-major; returns how many were written, or throws on a non-number. */
function flatten(data: unknown, out: Float32Array, at: number, depth = 0): number {
  if (depth > 4) throw bad("Expected the tensor's data nested at most 4 deep (the input's rank)");
  if (typeof data === "number") {
    if (at >= out.length) throw bad(`Expected ${out.length} values in the tensor's data but received more`);
    out[at] = data;
    return at + 1;
  }
  if (!Array.isArray(data))
    throw bad(`Expected the tensor's data to hold numbers but found ${JSON.stringify(data)}`);
  for (const d of data) at = flatten(d, out, at, depth + 1);
  return at;
}

/** Validates an inference request against the model, with a reason for each refusal (HTTP 400). */
export function parseInferRequest(json: unknown, svc: ModelService): InferRequest {
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw bad('Expected an inference request object {"inputs": [...]}');
  const r = json as { id?: unknown; inputs?: unknown; outputs?: unknown };
  if (r.id !== undefined && typeof r.id !== "string")
    throw bad(`Expected id to be a string but received ${JSON.stringify(r.id)}`);
  if (!Array.isArray(r.inputs) || r.inputs.length !== 1)
    throw bad(
      `Expected inputs to hold exactly one tensor, "${INPUT_NAME}", but received ${Array.isArray(r.inputs) ? r.inputs.length : typeof r.inputs}`,
    );
  const t = r.inputs[0] as { name?: unknown; shape?: unknown; datatype?: unknown; data?: unknown };
  if (t?.name !== INPUT_NAME)
    throw bad(
      `Expected the input tensor to be named "${INPUT_NAME}" but received ${JSON.stringify(t?.name)}`,
    );
  if (t.datatype !== "FP32")
    throw bad(
      `Expected datatype "FP32" for input "${INPUT_NAME}" but received ${JSON.stringify(t.datatype)}`,
    );
  const want = [-1, ...svc.shape];
  const shape = t.shape;
  if (
    !Array.isArray(shape) ||
    shape.length !== 4 ||
    !shape.every((d) => Number.isInteger(d)) ||
    shape[0] < 1 ||
    shape.slice(1).some((d, i) => d !== svc.shape[i])
  )
    throw bad(
      `Expected input "${INPUT_NAME}" of shape [${want.join(", ")}] but received ${JSON.stringify(shape)}`,
    );
  const n = shape[0] as number;
  if (n > svc.maxImagesPerRequest)
    throw bad(
      `Expected at most ${svc.maxImagesPerRequest} images per request but the shape's first dimension is ${n}`,
    );
  const input = new Float32Array(n * svc.imageSize);
  const written = flatten(t.data, input, 0);
  if (written !== input.length)
    throw bad(
      `Expected ${input.length} values for shape ${JSON.stringify(shape)} but the data holds ${written}`,
    );
  let outputs: OutputName[] = [...OUTPUT_NAMES];
  if (r.outputs !== undefined) {
    if (!Array.isArray(r.outputs))
      throw bad('Expected outputs to be a list like [{"name": "probabilities"}]');
    outputs = r.outputs.map((o: { name?: unknown }) => {
      if (!OUTPUT_NAMES.includes(o?.name as OutputName))
        throw bad(
          `Expected an output named ${OUTPUT_NAMES.map((x) => `"${x}"`).join(" or ")} but received ${JSON.stringify(o?.name)}`,
        );
      return o.name as OutputName;
    });
  }
  return { id: r.id, n, input, outputs };
}

/** The inference response: the requested outputs as flat row-major FP32 data. */
export function inferResponse(svc: ModelService, req: InferRequest, logits: Float32Array): object {
  const k = svc.config.numClasses;
  const data = (name: OutputName): number[] => {
    if (name === "logits") return Array.from(logits);
    const p: number[] = [];
    for (let i = 0; i < req.n; i++)
      for (const v of softmax(logits.subarray(i * k, (i + 1) * k))) p.push(Math.fround(v));
    return p;
  };
  return {
    model_name: svc.name,
    model_version: MODEL_VERSION,
    ...(req.id !== undefined ? { id: req.id } : {}),
    outputs: req.outputs.map((name) => ({ name, datatype: "FP32", shape: [req.n, k], data: data(name) })),
  };
}
