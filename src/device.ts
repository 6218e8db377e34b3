// Device storage: what the core (autograd, Tensor) needs of a tensor whose values live in an accelerator's
// memory (a WebGPU buffer, src/backend/webgpu/tensor-storage.ts), so the core never imports a backend.
// Below autograd and tensor in the core's import order (shape < memory < device < autograd < tensor).
//
// A device tensor's values never come to the host on their own: reading is explicit and asynchronous
// (Tensor.toArrayAsync, itemAsync, dataAsync). Its memory goes back to the device's pool when nothing can
// read it again (the same moments memory.ts reuses host buffers), or when the storage is collected.

/** Where a tensor's values live. */
export type DeviceName = "cpu" | "webgpu";

/** An accelerator that tensors can live on: it makes storage from host values. */
export interface Device {
  readonly name: Exclude<DeviceName, "cpu">;
  /** A human-readable description of the adapter ("webgpu (google swiftshader)"). */
  readonly description: string;
  /** New storage holding `data`. */
  upload(data: Float32Array): DeviceStorage;
  /** New storage of `length` elements, each `value`. */
  full(length: number, value: number): DeviceStorage;
}

/** A tensor's values on a device. */
export interface DeviceStorage {
  readonly device: Device;
  readonly length: number;
  /** New storage with the same values. */
  clone(): DeviceStorage;
  /** this += other, element-wise (gradient accumulation). */
  addInPlace(other: DeviceStorage): void;
  /** Overwrites the values with `data` (loadStateDict, initialisers run on the host). */
  write(data: Float32Array): void;
  /** The values, once the device has run all work queued before this call. */
  read(): Promise<Float32Array>;
  /**
   * Returns the memory to the device's pool unless the storage was exposed; it must not be used again.
   * Returns whether it was released.
   */
  release(): boolean;
  /** Marks the storage as handed to the caller: release() leaves it alone from now on. */
  expose(): void;
}

let current: Device | null = null;

/** The device `Tensor.to("webgpu")` and `Module.to("webgpu")` move to (set by useBackend("webgpu")). */
export function currentDevice(): Device | null {
  return current;
}

export function setCurrentDevice(d: Device | null): void {
  current = d;
}
