// Checkpoints. `model.safetensors` holds the weights under PyTorch's names (loadable by torch's
// load_state_dict) with the model configuration in `__metadata__`. `checkpoint.safetensors` holds
// everything --resume needs in one atomically written file: weights, momentum buffers, and (in the
// metadata) the epoch, the RNG state, the run's options and its history.
import { readSafetensors, type SafetensorsInput, writeSafetensors } from "../io/safetensors.js";
import {
  type ConvArch,
  resolveConfig,
  type VggConfig,
  type VggModel,
  type VggOptions,
  vgg,
  vggFromConfig,
} from "../models/vgg.js";
import type { Module } from "../nn/module.js";
import type { SGD } from "../optim/sgd.js";
import { formatShape, type Tensor } from "../tensor.js";

const CONFIG_KEY = "vgg-ts.config";

/**
 * The values of a model (and an optimiser's momentum buffers) in host memory, read from the device
 * where they live on one; host tensors are not copied. What saveModel and saveCheckpoint write.
 */
export interface HostState {
  values: Map<Tensor, Float32Array>;
  momentum: (Float32Array | null)[] | null;
}

export async function readHostState(model: Module, optimizer?: SGD): Promise<HostState> {
  const values = new Map<Tensor, Float32Array>();
  for (const [, t] of model.stateDict()) values.set(t, t.deviceStorage ? await t.dataAsync() : t.data);
  return { values, momentum: optimizer ? await optimizer.stateBuffersAsync() : null };
}

function stateTensors(model: Module, prefix = "", host?: HostState): Map<string, SafetensorsInput> {
  const out = new Map<string, SafetensorsInput>();
  for (const [name, t] of model.stateDict())
    out.set(prefix + name, {
      shape: t.shape,
      data: host?.values.get(t) ?? t.data,
      dtype: name.endsWith("num_batches_tracked") ? "I64" : "F32",
    });
  return out;
}

/** Writes the weights; a model on a device needs `host` (readHostState) first. */
export function saveModel(
  path: string,
  model: VggModel,
  extra: Record<string, string> = {},
  host?: HostState,
): void {
  writeSafetensors(path, stateTensors(model, "", host), {
    format: "pt",
    [CONFIG_KEY]: JSON.stringify(model.config),
    ...extra,
  });
}

export interface LoadedModel {
  model: VggModel;
  /** Where the configuration came from: the file's metadata or the caller's flags. */
  configSource: "metadata" | "flags";
  metadata: Record<string, string>;
}

/**
 * Builds the model a weights file describes and loads it. A file without vgg-ts metadata (e.g. saved by
 * PyTorch) needs `fallback` options describing the architecture.
 */
export function loadModel(
  path: string,
  fallback: { convArch: ConvArch; options: VggOptions } | null,
): LoadedModel {
  const { tensors, metadata } = readSafetensors(path);
  let model: VggModel;
  let configSource: LoadedModel["configSource"];
  const stored = metadata[CONFIG_KEY];
  if (stored) {
    const c = JSON.parse(stored) as VggConfig;
    model = vggFromConfig(c);
    configSource = "metadata";
  } else {
    if (!fallback)
      throw new Error(
        `${path} carries no vgg-ts model configuration (it was probably saved by PyTorch); describe the model with --arch, --ratio, --layout, --input-size, --num-classes`,
      );
    model = vgg(fallback.convArch, fallback.options);
    configSource = "flags";
  }
  try {
    model.loadStateDict(tensors);
  } catch (e) {
    const hint =
      configSource === "flags"
        ? "\nhint: the model flags (--arch, --ratio, --layout, --batch-norm, ...) must describe the saved model"
        : "";
    throw new Error(`Cannot load ${path}: ${(e as Error).message}${hint}`);
  }
  return { model, configSource, metadata };
}

/**
 * Copies weights from a file into a model for fine-tuning: tensors whose shapes differ (a classifier head
 * for another number of classes) are left as initialised and reported; every other key must match.
 */
export function loadInitWeights(path: string, model: VggModel): { skipped: string[] } {
  const { tensors } = readSafetensors(path);
  const own = model.stateDict();
  const skipped: string[] = [];
  const usable = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of tensors) {
    const mine = own.get(name);
    if (mine && formatShape(mine.shape) !== formatShape(t.shape) && mine.size !== 1) skipped.push(name);
    else usable.set(name, t);
  }
  // Missing keys must only be the ones we skipped (their counterparts in the model keep their init).
  const missing = [...own.keys()].filter((k) => !usable.has(k) && !skipped.includes(k));
  const unexpected = [...usable.keys()].filter((k) => !own.has(k));
  if (missing.length > 0 || unexpected.length > 0)
    throw new Error(
      `Cannot initialise from ${path}: ${missing.length ? `missing ${missing.join(", ")}` : ""}${missing.length && unexpected.length ? "; " : ""}${unexpected.length ? `unexpected ${unexpected.join(", ")}` : ""}; hint: the file must hold the same architecture (--arch, --ratio, --layout, --batch-norm)`,
    );
  model.loadStateDict(usable, { strict: false });
  return { skipped };
}

export interface TrainState {
  /** Epochs completed. */
  epoch: number;
  rng: (number | null)[];
  /** The run's options, so a resumed run continues the same recipe. */
  options: Record<string, unknown>;
  history: Record<string, unknown>[];
}

/** Writes everything --resume needs; a model on a device needs `host` (readHostState) first. */
export function saveCheckpoint(
  path: string,
  model: VggModel,
  optimizer: SGD,
  state: TrainState,
  host?: HostState,
): void {
  const tensors = stateTensors(model, "model.", host);
  (host?.momentum ?? optimizer.stateBuffers()).forEach((b, i) => {
    if (b) tensors.set(`optimizer.momentum_buffer.${i}`, { shape: [b.length], data: b });
  });
  writeSafetensors(path, tensors, {
    format: "vgg-ts-checkpoint",
    [CONFIG_KEY]: JSON.stringify(model.config),
    "vgg-ts.train-state": JSON.stringify(state),
  });
}

export interface LoadedCheckpoint {
  config: VggConfig;
  state: TrainState;
  /** Restores weights and momentum buffers into a model/optimiser built from `config`. */
  restore(model: VggModel, optimizer: SGD): void;
}

export function readCheckpoint(path: string): LoadedCheckpoint {
  const { tensors, metadata } = readSafetensors(path);
  const cfgText = metadata[CONFIG_KEY];
  const stateText = metadata["vgg-ts.train-state"];
  if (!cfgText || !stateText)
    throw new Error(`${path} is not a vgg-ts training checkpoint (no train state in its metadata)`);
  const config = JSON.parse(cfgText) as VggConfig;
  resolveConfig(config.convArch, { ...config, widthRatio: 1 }); // validates
  const state = JSON.parse(stateText) as TrainState;
  return {
    config,
    state,
    restore(model, optimizer) {
      const weights = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const [k, t] of tensors) if (k.startsWith("model.")) weights.set(k.slice(6), t);
      model.loadStateDict(weights);
      optimizer.loadStateBuffers(
        optimizer.params.map((_, i) => tensors.get(`optimizer.momentum_buffer.${i}`)?.data ?? null),
      );
    },
  };
}
