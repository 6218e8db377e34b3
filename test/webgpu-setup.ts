// Shared setup of the WebGPU tests: a device on the machine's adapter, or on SwiftShader (Debian's
// chromium ships it) where VK_ICD_FILENAMES is unset and the ICD is there. Without the `webgpu` package
// or an adapter the tests skip with the reason, unless CI is set and the machine has what .ci/run
// installs for them (chromium's SwiftShader ICD and Debian's libvulkan1, the Vulkan loader Dawn opens).
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import type { DeviceArray } from "../src/backend/webgpu/buffers.js";
import { GpuContext } from "../src/backend/webgpu/context.js";
import {
  SWIFTSHADER_ICD,
  vulkanLoaderInstalled,
  WebGpuUnavailableError,
} from "../src/backend/webgpu/device.js";

if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD))
  process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;

/** The device, or why there is none (then `skip` holds the message the tests skip with). */
export async function openGpu(): Promise<{ ctx: GpuContext | null; skip: string | false }> {
  try {
    return { ctx: await GpuContext.create(), skip: false };
  } catch (err) {
    if (!(err instanceof WebGpuUnavailableError)) throw err;
    const installed = existsSync(SWIFTSHADER_ICD) && (await vulkanLoaderInstalled()) !== false;
    if (process.env.CI && installed) throw err;
    const hint = existsSync(SWIFTSHADER_ICD)
      ? ""
      : ` (no SwiftShader: apt-get install chromium libvulkan1, then set VK_ICD_FILENAMES=${SWIFTSHADER_ICD})`;
    return { ctx: null, skip: `${err.message}${hint}` };
  }
}

// mulberry32: a small seeded generator so failures reproduce.
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Asserts max |a - b| <= tol * (1 + max |b|) (NaN where b is NaN) and returns the max difference. */
export function close(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  what: string,
  tol = 1e-4,
): number {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < actual.length; i++) {
    if (Number.isNaN(expected[i])) {
      assert.ok(Number.isNaN(actual[i]), `${what}[${i}]: expected NaN but received ${actual[i]}`);
      continue;
    }
    if (expected[i] === actual[i]) continue;
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
  }
  assert.ok(maxDiff <= tol * (1 + maxRef), `${what}: max difference ${maxDiff} (max |ref| ${maxRef})`);
  return maxDiff;
}

/** A device array of `data`'s values. */
export function up(ctx: GpuContext, data: Float32Array | Int32Array): DeviceArray {
  return ctx.upload(data);
}

/** A device array of n elements filled with garbage, so a kernel that leaves any unwritten shows it. */
export function stale(ctx: GpuContext, n: number, dtype: "f32" | "i32" = "f32"): DeviceArray {
  const junk = dtype === "f32" ? new Float32Array(n).fill(12345.5) : new Int32Array(n).fill(-7777);
  return ctx.upload(junk);
}
