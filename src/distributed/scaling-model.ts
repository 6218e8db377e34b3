// A model of data-parallel step time, for predicting how training scales over N nodes:
//   step(N) = compute(B_node) + exposed all-reduce
//   all-reduce of G bytes over a ring of N (Patarasuk & Yuan's bandwidth-optimal bound, which
//   Rabenseifner's algorithm also reaches): t(G) = 2 (N - 1) / N * G / bandwidth + 2 (N - 1) * latency
//   overlap: the classifier's gradients (most of G in a VGG) are final when the backward pass enters the
//   conv trunk, whose backward (2 x its MACs of the step's 3 x total MACs) then hides their all-reduce;
//   the trunk's own last bucket can only start when backward ends, so it is always exposed:
//   exposed = max(0, t(G - G_last) - window) + t(G_last),  window = (2 convMACs / 3 totalMACs) * compute
//   efficiency = compute / (compute + exposed)
// Compute time per image is taken as constant (per-node batches too small to keep the kernels busy
// make the real figure lower), and the reduction's own arithmetic and memory traffic are ignored.
import { summarize } from "../models/summary.js";
import type { VggModel } from "../models/vgg.js";

export interface StepProfile {
  name: string;
  gradientBytes: number;
  /** Bytes of the bucket that becomes final last (the first conv layers'), never overlapped. */
  lastBucketBytes: number;
  /** The share of a step's compute after the first buckets are final (the conv trunk's backward). */
  overlapShare: number;
  /** Seconds of compute per image on one node. */
  secondsPerImage: number;
}

export interface Link {
  /** Bytes per second each node can send (and receive) at once. */
  bytesPerSecond: number;
  /** Seconds per message step. */
  latencySeconds: number;
}

/** Bytes, overlap share and last bucket of a model's training step, from its layer table. */
export function profileOf(
  name: string,
  model: VggModel,
  inputShape: number[],
  secondsPerImage: number,
  bucketBytes = 25e6,
): StepProfile {
  const s = summarize(model, inputShape);
  const isConv = (r: { layer: string }) => r.layer.startsWith("Conv2d");
  const convMacs = s.rows.filter(isConv).reduce((a, r) => a + r.macs, 0);
  const convBytes = s.rows.filter(isConv).reduce((a, r) => a + r.params * 4, 0);
  return {
    name,
    gradientBytes: s.trainableParams * 4,
    lastBucketBytes: Math.min(convBytes, bucketBytes),
    overlapShare: (2 * convMacs) / (3 * s.totalMacs),
    secondsPerImage,
  };
}

export function ringAllreduceSeconds(bytes: number, nodes: number, link: Link): number {
  if (nodes <= 1) return 0;
  return ((2 * (nodes - 1)) / nodes) * (bytes / link.bytesPerSecond) + 2 * (nodes - 1) * link.latencySeconds;
}

export interface StepPrediction {
  computeSeconds: number;
  allreduceSeconds: number;
  exposedSeconds: number;
  efficiency: number;
}

/** One step with `imagesPerNode` images on each of `nodes` nodes. */
export function predictStep(
  p: StepProfile,
  nodes: number,
  imagesPerNode: number,
  link: Link,
  overlap = true,
): StepPrediction {
  const computeSeconds = imagesPerNode * p.secondsPerImage;
  const allreduceSeconds = ringAllreduceSeconds(p.gradientBytes, nodes, link);
  let exposedSeconds = allreduceSeconds;
  if (overlap && nodes > 1) {
    const last = ringAllreduceSeconds(p.lastBucketBytes, nodes, link);
    const early = ringAllreduceSeconds(p.gradientBytes - p.lastBucketBytes, nodes, link);
    exposedSeconds = Math.max(0, early - p.overlapShare * computeSeconds) + last;
  }
  return {
    computeSeconds,
    allreduceSeconds,
    exposedSeconds,
    efficiency: computeSeconds / (computeSeconds + exposedSeconds),
  };
}
