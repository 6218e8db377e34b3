// vgg-ts: the library entry point.
export { isGradEnabled, noGrad } from "./autograd.js";
export type { Backend, BackendName, Precision } from "./backend/index.js";
export {
  backend,
  backendFallbackReason,
  configureBackend,
  configureRuntime,
  getPrecision,
  setBackend,
  setNumThreads,
  setPrecision,
  useBackend,
  webGpuDevice,
  withPrecision,
} from "./backend/index.js";
export * as data from "./data/index.js";
export type { DeviceName } from "./device.js";
export * as io from "./io/index.js";
export { type ModelSummary, summarize } from "./models/summary.js";
export * from "./models/vgg.js";
export * as nn from "./nn/index.js";
export * as F from "./ops/index.js";
export * as optim from "./optim/index.js";
export { defaultGenerator, Generator, manualSeed } from "./rng.js";
export {
  formatShape,
  fromArray,
  full,
  ones,
  Parameter,
  rand,
  randn,
  type Shape,
  shapeSize,
  Tensor,
  zeros,
} from "./tensor.js";
export type { TrainCallback } from "./train/events.js";
export { FIT_DEFAULTS, type FitOptions, type FitResult, fit } from "./train/fit.js";
export * as train from "./train/index.js";
