// The backend chooser of the browser build: scripts/build-web.ts bundles this file in place of
// src/backend/index.ts (which loads the Node addon), so the pages run the library's own pure-TypeScript
// reference kernels on the host, and the WGSL kernels of src/backend/webgpu/ on the browser's
// navigator.gpu after `await useBackend("webgpu")`. Same exports, same messages, as far as they apply.
import type { Backend } from "../backend/backend.js";
import { ReferenceBackend } from "../backend/reference.js";
import { openWebGpu } from "../backend/webgpu/device-tensor.js";
import { setCurrentDevice } from "../device.js";

export { webGpuDevice } from "../backend/webgpu/device-tensor.js";

export type BackendName = "reference" | "native" | "webgpu";
export type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "../backend/backend.js";

let current: Backend = new ReferenceBackend();

export function backend(): Backend {
  return current;
}

export function setBackend(name: BackendName): Backend {
  if (name !== "reference")
    throw new Error(
      `Expected backend "reference" in the browser but received "${name}"; the native addon needs Node${name === "webgpu" ? ', and webgpu opens asynchronously: use await useBackend("webgpu")' : ""}`,
    );
  current = new ReferenceBackend();
  setCurrentDevice(null);
  return current;
}

export function backendFallbackReason(): string | null {
  return "the browser build has only the reference backend";
}

export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`Expected a thread count >= 1 but received ${n}`);
  current.setNumThreads(n);
}

/** The browser runs fp32 only. */
export function getPrecision(): "fp32" {
  return "fp32";
}

/**
 * "webgpu": opens navigator.gpu's adapter as the current device (WebGpuUnavailableError, saying what
 * was missing, where the browser has none); "reference": the host only.
 */
export async function useBackend(name: BackendName): Promise<void> {
  if (name !== "webgpu") {
    setBackend(name);
    return;
  }
  await openWebGpu();
}
