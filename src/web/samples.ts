// The dashboard's picture grid: a fixed handful of test images with the model's predicted and true labels,
// prepared exactly as evaluation prepares them (BatchPreparer) and run synchronously, so the forward pass
// happens between two epochs and never interleaves with training.
import { noGrad } from "../autograd.js";
import { BatchPreparer } from "../data/batch.js";
import type { Dataset } from "../data/loader.js";
import type { VggModel } from "../models/vgg.js";
import { Tensor } from "../tensor.js";

export interface SampleGrid {
  epoch: number;
  /** Side of each image as stored (Fashion-MNIST: 28). */
  rows: number;
  cols: number;
  /** Base64 of each image's raw grey bytes (rows * cols). */
  images: string[];
  labels: number[];
  predictions: number[];
  /** Softmax probability of the predicted class. */
  confidence: number[];
  classes: readonly string[];
}

/** `count` indices spread evenly over the first `limit` examples. */
export function sampleIndices(limit: number, count: number): Int32Array {
  const n = Math.min(limit, count);
  return Int32Array.from({ length: n }, (_, i) => Math.floor((i * limit) / n));
}

export function predictSamples(
  model: VggModel,
  data: Dataset,
  indices: Int32Array,
  epoch: number,
  classes: readonly string[],
): SampleGrid {
  const size = model.config.inputSize;
  const prepared = new BatchPreparer(data.images, data.labels, {
    rows: data.rows,
    cols: data.cols,
    outH: size,
    outW: size,
  }).prepare(indices, 0);
  const n = indices.length;
  model.eval();
  const logits = noGrad(() => model.forward(new Tensor(prepared.x, [n, 1, size, size]))).data;
  const k = logits.length / n;
  const predictions: number[] = [];
  const confidence: number[] = [];
  for (let b = 0; b < n; b++) {
    const row = logits.subarray(b * k, (b + 1) * k);
    let best = 0;
    for (let j = 1; j < k; j++) if (row[j] > row[best]) best = j;
    let sum = 0;
    for (let j = 0; j < k; j++) sum += Math.exp(row[j] - row[best]);
    predictions.push(best);
    confidence.push(1 / sum);
  }
  const plane = data.rows * data.cols;
  return {
    epoch,
    rows: data.rows,
    cols: data.cols,
    images: [...indices].map((i) =>
      Buffer.from(data.images.buffer, data.images.byteOffset + i * plane, plane).toString("base64"),
    ),
    labels: [...indices].map((i) => data.labels[i]),
    predictions,
    confidence,
    classes,
  };
}
