// Chooses the backend: VGG_BACKEND=reference|native forces one; otherwise the native addon when it loads,
// else the reference backend with a one-time message that says why and how to fix it.
import type { Backend } from "./backend.js";
import { Bf16Backend, type Precision, parsePrecision } from "./bf16.js";
import { loadNativeBackend } from "./native.js";
import { ReferenceBackend } from "./reference.js";

export type BackendName = "reference" | "native";
export type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "./backend.js";
export { type Precision, precisions } from "./bf16.js";

let current: Backend | null = null;
/** Why the native backend is not in use (null when it is, or was never tried). */
let fallbackReason: string | null = null;

function create(name: BackendName): Backend {
  if (name === "reference") return new ReferenceBackend();
  const native = loadNativeBackend();
  if (native instanceof Error) throw new Error(`Cannot use the native backend: ${native.message}`);
  return native;
}

function initial(): Backend {
  const forced = process.env.VGG_BACKEND;
  if (forced !== undefined && forced !== "") {
    if (forced !== "reference" && forced !== "native")
      throw new Error(`Expected VGG_BACKEND to be "reference" or "native" but received "${forced}"`);
    return create(forced);
  }
  const native = loadNativeBackend();
  if (native instanceof Error) {
    fallbackReason = native.message;
    if (!process.env.VGG_QUIET)
      process.emitWarning(`vgg-ts: using the reference backend because ${native.message}`);
    return new ReferenceBackend();
  }
  return native;
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

/** Switches the backend for all later ops. Throws (with a fix) if the native addon is unavailable. */
export function setBackend(name: BackendName): Backend {
  current = create(name);
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
