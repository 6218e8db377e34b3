// The backend chooser of the browser build: scripts/build-web.ts bundles this file in place of
// src/backend/index.ts (which loads the Node addon), so the pages run the library's own pure-TypeScript
// reference kernels. Same exports, same messages.
import type { Backend } from "../backend/backend.js";
import { ReferenceBackend } from "../backend/reference.js";

export type BackendName = "reference" | "native";
export type { Backend, Conv2dGeometry, Pool2dGeometry, SgdOptions } from "../backend/backend.js";

let current: Backend = new ReferenceBackend();

export function backend(): Backend {
  return current;
}

export function setBackend(name: BackendName): Backend {
  if (name !== "reference")
    throw new Error(
      `Expected backend "reference" in the browser but received "${name}"; the native addon needs Node`,
    );
  current = new ReferenceBackend();
  return current;
}

export function backendFallbackReason(): string | null {
  return "the browser build has only the reference backend";
}

export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`Expected a thread count >= 1 but received ${n}`);
  current.setNumThreads(n);
}
