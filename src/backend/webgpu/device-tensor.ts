// Tensors on the GPU: WebGpuDevice is the core's Device (device.ts) over one GpuContext, and GpuStorage a
// tensor's values in one of its pooled buffers. The ops (src/ops/) run their WGSL kernels on
// GpuStorage.array; autograd and Tensor only clone, add, write, read and release it.
//
// Memory: a storage goes back to the context's pool when the core releases it (the moments memory.ts
// reuses host buffers: a gradient consumed by the backward walk, an activation a Sequential never
// returned, a cleared gradient nobody read), or, as a backstop, when the storage object is collected.
// A storage handed to the caller (expose) is never released early.
/// <reference types="@webgpu/types" />
import { currentDevice, type Device, type DeviceStorage, setCurrentDevice } from "../../device.js";
import type { DeviceArray, DeviceDType, GpuBufferPool } from "./buffers.js";
import { GpuContext } from "./context.js";
import { addInPlace, fill } from "./elementwise.js";

/** Returns a collected storage's buffer to its pool (unless it was released explicitly first). */
const collected = new FinalizationRegistry<{ pool: GpuBufferPool; array: DeviceArray }>(({ pool, array }) =>
  pool.release(array),
);

export class GpuStorage implements DeviceStorage {
  private released = false;
  private exposed = false;

  constructor(
    readonly device: WebGpuDevice,
    private readonly buffer: DeviceArray,
  ) {
    collected.register(this, { pool: device.ctx.pool, array: buffer }, this);
  }

  /** The device array the kernels read and write. */
  get array(): DeviceArray {
    if (this.released) throw new Error("Internal error: a released WebGPU tensor storage was used again");
    return this.buffer;
  }

  get length(): number {
    return this.buffer.length;
  }

  clone(): GpuStorage {
    const c = this.device.alloc(this.length);
    this.device.ctx.copy(c.array, this.array);
    return c;
  }

  addInPlace(other: DeviceStorage): void {
    addInPlace(this.device.ctx, this.array, this.device.storageOf(other, "a gradient").array);
  }

  write(data: Float32Array): void {
    this.device.ctx.upload(data, this.array);
  }

  read(): Promise<Float32Array> {
    return this.device.ctx.readFloat32(this.array);
  }

  release(): boolean {
    if (this.released || this.exposed) return false;
    this.released = true;
    collected.unregister(this);
    this.device.ctx.pool.release(this.buffer);
    return true;
  }

  expose(): void {
    this.exposed = true;
  }
}

export class WebGpuDevice implements Device {
  readonly name = "webgpu";
  private onesCache: GpuStorage | null = null;

  constructor(readonly ctx: GpuContext) {}

  /** Opens the adapter (WebGpuUnavailableError, naming what was looked for, when there is none). */
  static async open(): Promise<WebGpuDevice> {
    return new WebGpuDevice(await GpuContext.create());
  }

  get description(): string {
    const a = this.ctx.adapter;
    return `webgpu (${[a.vendor, a.architecture, a.description || a.device].filter((s) => s).join(" ")})`;
  }

  /** A storage of `length` elements with unspecified contents (the kernel writing it must fill it). */
  alloc(length: number, dtype: DeviceDType = "f32"): GpuStorage {
    return new GpuStorage(this, this.ctx.pool.acquire(length, dtype));
  }

  upload(data: Float32Array | Int32Array): GpuStorage {
    return new GpuStorage(this, this.ctx.upload(data));
  }

  full(length: number, value: number): GpuStorage {
    const s = this.alloc(length);
    fill(this.ctx, s.array, value);
    return s;
  }

  /** A row of n ones (bias gradients as ones (1, n) x dy), kept while n repeats. */
  ones(n: number): GpuStorage {
    if (this.onesCache?.length !== n) {
      this.onesCache = this.full(n, 1);
      this.onesCache.expose();
    }
    return this.onesCache;
  }

  /** `s` as this device's storage; `what` names it in the error otherwise. */
  storageOf(s: DeviceStorage, what: string): GpuStorage {
    if (!(s instanceof GpuStorage) || s.device !== this)
      throw new Error(`Expected ${what} on this WebGPU device but it lives on ${s.device.description}`);
    return s;
  }

  /** Waits for the queued work (and throws the first WebGPU error seen). */
  sync(): Promise<void> {
    return this.ctx.sync();
  }

  destroy(): void {
    this.ctx.destroy();
  }
}

/** The device, opened once per process (or page). */
let opened: Promise<WebGpuDevice> | null = null;

/**
 * Opens the adapter once and makes its device the current one (useBackend("webgpu"), in Node and in the
 * browser); a failed open is tried again by the next call.
 */
export async function openWebGpu(): Promise<void> {
  opened ??= WebGpuDevice.open();
  try {
    setCurrentDevice(await opened);
  } catch (e) {
    opened = null;
    throw e;
  }
}

/** The open WebGPU device, when useBackend("webgpu") made it the current one. */
export function webGpuDevice(): WebGpuDevice | null {
  const d = currentDevice();
  return d instanceof WebGpuDevice ? d : null;
}
