// Chooses the backend: VGG_BACKEND=reference|native forces one; otherwise the native addon when it loads,
// else the reference backend with a one-time message that says why and how to fix it.
// "webgpu" (useBackend, VGG_BACKEND=webgpu with configureRuntime) opens the GPU as the current device
// (device.ts): tensors moved there run the WGSL kernels of ./webgpu/; host tensors keep the CPU backend.
import { type DeviceName, setCurrentDevice } from "../device.js";
import type { Backend } from "./backend.js";
import { Bf16Backend, type Precision, parsePrecision } from "./bf16.js";
import { loadNativeBackend } from "./native.js";
import { ReferenceBackend } from "./reference.js";
import { openWebGpu } from "./webgpu/device-tensor.js";

export { webGpuDevice } from "./webgpu/device-tensor.js";

/** Where a model runs: the CPU kernels (reference, native) or the GPU through WebGPU. */
export type BackendName = "reference" | "native" | "webgpu";
const backendNames: readonly BackendName[] = ["reference", "native", "webgpu"];

export type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "./backend.js";
export { type Precision, precisions } from "./bf16.js";

let current: Backend | null = null;
/** Why the native backend is not in use (null when it is, or was never tried). */
let fallbackReason: string | null = null;

function create(name: BackendName): Backend {
  if (name === "webgpu")
    throw new Error('The webgpu backend opens the GPU asynchronously: use await useBackend("webgpu")');
  if (name === "reference") return new ReferenceBackend();
  const native = loadNativeBackend();
  if (native instanceof Error) throw new Error(`Cannot use the native backend: ${native.message}`);
  return native;
}

function initial(): Backend {
  const forced = envBackend();
  // With webgpu the host tensors (data, metrics) still need CPU kernels: the usual choice.
  if (forced && forced !== "webgpu") return create(forced);
  const native = loadNativeBackend();
  if (native instanceof Error) {
    fallbackReason = native.message;
    if (!process.env.VGG_QUIET)
      process.emitWarning(`vgg-ts: using the reference backend because ${native.message}`);
    return new ReferenceBackend();
  }
  return native;
}

function envBackend(): BackendName | null {
  const forced = process.env.VGG_BACKEND;
  if (forced === undefined || forced === "") return null;
  if (!(backendNames as readonly string[]).includes(forced))
    throw new Error(`Expected VGG_BACKEND to be "reference", "native" or "webgpu" but received "${forced}"`);
  return forced as BackendName;
}

let precision: Precision = "fp32";
/** The bf16 view of `current` (made once per backend, so its identity is stable). */
let bf16View: Bf16Backend | null = null;

/** The backend every op runs on (seen through bf16 autocast while the precision is "bf16"). */
export function backend(): Backend {
  if (!current) current = initial();
  if (precision === "fp32") return current;
  if (bf16View?.base !== current) bf16View = new Bf16Backend(current);
  return bf16View;
}

/**
 * Sets the precision of convolutions and linear layers for all later ops (as PyTorch's
 * torch.autocast("cpu", dtype=torch.bfloat16) while it is entered): "bf16" rounds their inputs to bfloat16
 * and sums in float32; weights, gradients, optimiser state and the loss stay float32. Default "fp32".
 */
export function setPrecision(p: Precision): void {
  precision = parsePrecision(p);
  if (precision === "fp32") bf16View = null;
}

export function getPrecision(): Precision {
  return precision;
}

/** Runs fn with the precision set to p, then restores the previous one (also when fn throws). */
export function withPrecision<T>(p: Precision, fn: () => T): T {
  const previous = precision;
  setPrecision(p);
  try {
    return fn();
  } finally {
    setPrecision(previous);
  }
}

/** Switches the CPU backend for all later ops. Throws (with a fix) if the native addon is unavailable. */
export function setBackend(name: BackendName): Backend {
  current = create(name);
  setCurrentDevice(null);
  const threads = process.env.VGG_NUM_THREADS;
  if (threads) current.setNumThreads(Number(threads));
  return current;
}

/** Why the reference backend was chosen automatically, if it was. */
export function backendFallbackReason(): string | null {
  backend();
  return fallbackReason;
}

/** Sets the number of kernel threads (native backend; the reference backend is single-threaded). */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`Expected a thread count >= 1 but received ${n}`);
  backend().setNumThreads(n);
}

/**
 * Switches to `backend` when given, sets `threads` (else $VGG_NUM_THREADS) kernel threads and, when
 * given, the precision (setPrecision).
 */
export function configureBackend(o: {
  backend?: BackendName;
  threads?: number;
  precision?: Precision;
}): Backend {
  if (o.backend) setBackend(o.backend);
  if (o.precision) setPrecision(o.precision);
  const env = process.env.VGG_NUM_THREADS;
  const threads = o.threads ?? (env ? Number(env) : undefined);
  if (threads) setNumThreads(threads);
  return backend();
}

/** The WebGPU device, opened once per process and kept (Dawn's instance lives as long). */
/**
 * Chooses where models run, as a program's first step: "reference" or "native" (as setBackend), or
 * "webgpu", which opens the GPU adapter (an error naming what was looked for when there is none) and
 * makes it the current device: `model.to("webgpu")`, `x.to("webgpu")` move tensors there, and fit and
 * the CLI do so themselves. Host tensors keep the CPU backend.
 */
export async function useBackend(name: BackendName): Promise<void> {
  if (name !== "webgpu") {
    setBackend(name);
    return;
  }
  if (precision !== "fp32")
    throw new Error(`The webgpu backend runs fp32 only; received precision ${precision}`);
  await openWebGpu();
}

/**
 * configureBackend for every backend: "webgpu" (from o.backend, else $VGG_BACKEND) opens the GPU
 * (useBackend). Returns the CPU backend and where the model's tensors go.
 */
export async function configureRuntime(o: {
  backend?: BackendName;
  threads?: number;
  precision?: Precision;
}): Promise<{ backend: Backend; device: DeviceName }> {
  const name = o.backend ?? envBackend() ?? undefined;
  if (name !== "webgpu") {
    setCurrentDevice(null);
    return { backend: configureBackend(o), device: "cpu" };
  }
  const be = configureBackend({ ...o, backend: undefined });
  await useBackend("webgpu");
  return { backend: be, device: "webgpu" };
}
