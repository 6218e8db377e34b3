// What the ops share to run on a device: which device an op's tensors are on (all on one, or an error
// that says which is where), and their device arrays. Each op's device path lives beside its host path.
import type { DeviceArray } from "../backend/webgpu/buffers.js";
import { GpuStorage, type WebGpuDevice } from "../backend/webgpu/device-tensor.js";
import type { DeviceStorage } from "../device.js";
import type { Tensor } from "../tensor.js";

/**
 * The WebGPU device the op's input x lives on, or null when x is on the host; every named tensor in
 * `others` must be where x is.
 */
export function gpuOf(
  op: string,
  x: Tensor,
  others: readonly (readonly [string, Tensor | null])[] = [],
): WebGpuDevice | null {
  const s = x.deviceStorage;
  const dev = s instanceof GpuStorage ? s.device : null;
  if (s && !dev) throw new Error(`${op} has no kernels for tensors on ${s.device.description}`);
  for (const [name, t] of others) {
    if (!t) continue;
    const o = t.deviceStorage;
    const same = dev ? o instanceof GpuStorage && o.device === dev : o === null;
    if (!same)
      throw new Error(
        `Expected ${name} of ${op} on ${x.device} (where its input is) but it is on ${t.device}; ` +
          `move the model and the inputs to one device (model.to("${x.device === "cpu" ? t.device : x.device}"), x.to(...))`,
      );
  }
  return dev;
}

/** The device array of a tensor on a WebGPU device. */
export function gpuArray(t: Tensor): DeviceArray {
  const s = t.deviceStorage;
  if (!(s instanceof GpuStorage)) throw new Error(`Expected ${t.toString()} on a WebGPU device`);
  return s.array;
}

/** A gradient storage handed to a device op's backward, as this device's storage. */
export function gradOn(dev: WebGpuDevice, g: DeviceStorage): GpuStorage {
  return dev.storageOf(g, "a gradient");
}
