// Loads the C++ addon built by node-gyp (build/Release/vgg_native.node) and wraps it as a Backend.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Backend } from "./backend.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** Paths tried, in order, for the compiled addon. */
export const addonPaths = [
  join(root, "build", "Release", "vgg_native.node"),
  join(root, "build", "Debug", "vgg_native.node"),
];

/** Returns the native backend, or an Error that says why it could not be loaded and how to fix it. */
export function loadNativeBackend(): Backend | Error {
  const path = addonPaths.find((p) => existsSync(p));
  if (!path)
    return new Error(
      `the native addon is not built (looked for ${addonPaths.join(", ")}). ` +
        "Possible solutions: run `npm install` (or `npx node-gyp rebuild`) in the package folder; it needs python3, make and a C++17 compiler.",
    );
  try {
    const require = createRequire(import.meta.url);
    const addon = require(path) as { createBackend?: () => Backend };
    if (typeof addon.createBackend !== "function")
      return new Error(`${path} does not export createBackend()`);
    return addon.createBackend();
  } catch (e) {
    return new Error(
      `the native addon at ${path} failed to load: ${(e as Error).message}. Try \`npx node-gyp rebuild\`.`,
    );
  }
}
