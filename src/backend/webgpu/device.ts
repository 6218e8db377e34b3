// Acquires a WebGPU adapter and device: navigator.gpu in a browser, else Dawn's Node binding (the optional
// npm package `webgpu`). Without an adapter it throws an error naming what was looked for and how to get
// a CPU adapter (SwiftShader, shipped with Debian's chromium) where the machine has no GPU.
/// <reference types="@webgpu/types" />

/** The Vulkan ICD of SwiftShader (a Vulkan implementation on the CPU) in Debian's chromium package. */
export const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";

/** What `vgg info` prints about the adapter. */
export interface WebGpuAdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** The limits the kernels depend on, as the adapter reports them. */
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxComputeWorkgroupsPerDimension: number;
  };
}

export interface WebGpuDevice {
  readonly device: GPUDevice;
  readonly adapter: WebGpuAdapterSummary;
}

/** The part of the `webgpu` package's exports used here. */
interface DawnModule {
  create(options: string[]): GPU;
}

/** Thrown when no WebGPU adapter can be had; the message says what was looked for. */
export class WebGpuUnavailableError extends Error {
  override readonly name = "WebGpuUnavailableError";
}

/**
 * Dawn's GPU object, kept for the life of the process: when it is collected, Dawn's instance goes with
 * it and the devices it made crash the process on their next wait.
 */
let dawnGpu: GPU | null = null;

async function findGpu(): Promise<GPU> {
  if (dawnGpu) return dawnGpu;
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (typeof process === "undefined")
    throw new WebGpuUnavailableError(
      "This browser has no WebGPU (navigator.gpu is undefined): it needs a browser with WebGPU enabled (Chrome and Edge have it from version 113) and a page served over https or from localhost",
    );
  // A variable keeps TypeScript from requiring the optional package at compile time.
  const packageName = "webgpu";
  let dawn: DawnModule;
  try {
    dawn = (await import(packageName)) as DawnModule;
  } catch (err) {
    throw new WebGpuUnavailableError(
      `The WebGPU backend needs the optional npm package "webgpu" (Dawn's Node binding), which did not load ` +
        `(${(err as Error).message}); install it with: npm install webgpu`,
    );
  }
  dawnGpu = dawn.create([]);
  return dawnGpu;
}

/**
 * Whether the Vulkan loader that Dawn opens (libvulkan.so.1) is known to the dynamic linker, on Linux;
 * null where that cannot be told (no ldconfig, another OS, a browser).
 */
export async function vulkanLoaderInstalled(): Promise<boolean | null> {
  if (typeof process === "undefined" || process.platform !== "linux") return null;
  const { spawnSync } = await import("node:child_process");
  for (const ldconfig of ["/sbin/ldconfig", "ldconfig"]) {
    const r = spawnSync(ldconfig, ["-p"], { encoding: "utf8" });
    if (r.status === 0) return r.stdout.includes("libvulkan.so.1");
  }
  return null;
}

async function lookedFor(): Promise<string> {
  if (typeof process === "undefined")
    return "the browser's navigator.gpu returned no adapter (WebGPU may be disabled or the GPU blocklisted; see chrome://gpu)";
  if (process.platform !== "linux")
    return `Dawn found no WebGPU adapter (${process.platform === "darwin" ? "Metal" : "D3D12 or Vulkan"})`;
  const icd = process.env.VK_ICD_FILENAMES;
  const loader =
    (await vulkanLoaderInstalled()) === false
      ? "the Vulkan loader libvulkan.so.1, which is not installed (Debian: apt-get install libvulkan1)"
      : `Vulkan drivers through libvulkan.so.1 (${icd ? `VK_ICD_FILENAMES=${icd}` : "the system's Vulkan ICDs; VK_ICD_FILENAMES is not set"})`;
  return (
    `Dawn found no WebGPU adapter: it looked for ${loader}. Without a GPU, a CPU adapter: ` +
    `apt-get install chromium libvulkan1, then set VK_ICD_FILENAMES=${SWIFTSHADER_ICD}`
  );
}

/** Requests the high-performance adapter and a device with its buffer limits. */
export async function requestWebGpuDevice(): Promise<WebGpuDevice> {
  const gpu = await findGpu();
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new WebGpuUnavailableError(await lookedFor());
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxStorageBuffersPerShaderStage: Math.min(l.maxStorageBuffersPerShaderStage, 8),
    },
  });
  const info = adapter.info;
  return {
    device,
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      limits: {
        maxBufferSize: l.maxBufferSize,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      },
    },
  };
}

/** The adapter a WebGPU backend would use, or why there is none (for `vgg info`); releases the device. */
export async function describeWebGpu(): Promise<WebGpuAdapterSummary | { unavailable: string }> {
  try {
    const { device, adapter } = await requestWebGpuDevice();
    device.destroy();
    return adapter;
  } catch (err) {
    if (err instanceof WebGpuUnavailableError) return { unavailable: err.message };
    throw err;
  }
}
