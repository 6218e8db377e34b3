// Device memory: DeviceArray, a typed view of a GPU storage buffer, and a pool that hands buffers of an
// exact byte size back out instead of creating new ones, so a training step after the first allocates
// nothing (the step's sizes repeat exactly, as in memory.ts on the CPU).
//
// A buffer released while encoded work still reads it may be handed out at once: every later use is
// encoded after that work on the one queue, so it runs after it. Only queue.writeBuffer skips ahead of
// unsubmitted work, so GpuContext.upload submits the pending commands first.
/// <reference types="@webgpu/types" />

/** GPUBufferUsage and GPUMapMode flags (WebGPU spec values), so no globals need installing in Node. */
export const Usage = { MAP_READ: 1, COPY_SRC: 4, COPY_DST: 8, UNIFORM: 64, STORAGE: 128 } as const;
export const MapMode = { READ: 1 } as const;

export type DeviceDType = "f32" | "i32" | "u32";

/** `length` elements of 4 bytes in `buffer` (which may be larger: pooled sizes round up to 16 bytes). */
export class DeviceArray {
  constructor(
    readonly buffer: GPUBuffer,
    readonly length: number,
    readonly dtype: DeviceDType,
  ) {}

  get byteLength(): number {
    return this.length * 4;
  }
}

/** Bytes actually allocated for n elements: a multiple of 16, at least 16 (zero-size bindings are invalid). */
export function allocatedBytes(length: number): number {
  return Math.max(16, Math.ceil((length * 4) / 16) * 16);
}

export class GpuBufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  /** Buffers created so far, and how many acquisitions the free lists served (tests, statistics). */
  created = 0;
  reused = 0;

  constructor(private readonly device: GPUDevice) {}

  /** A storage buffer of `length` elements with unspecified contents. */
  acquire(length: number, dtype: DeviceDType = "f32"): DeviceArray {
    if (!Number.isInteger(length) || length < 0)
      throw new RangeError(`Expected a device array length >= 0 but received ${length}`);
    const bytes = allocatedBytes(length);
    const buffer = this.free.get(bytes)?.pop();
    if (buffer) {
      this.reused++;
      return new DeviceArray(buffer, length, dtype);
    }
    this.created++;
    const fresh = this.device.createBuffer({
      size: bytes,
      usage: Usage.STORAGE | Usage.COPY_SRC | Usage.COPY_DST,
    });
    return new DeviceArray(fresh, length, dtype);
  }

  /** Returns an array's buffer for reuse; the array must not be used again. */
  release(a: DeviceArray | null | undefined): void {
    if (!a) return;
    const bytes = a.buffer.size;
    let list = this.free.get(bytes);
    if (!list) this.free.set(bytes, (list = []));
    if (!list.includes(a.buffer)) list.push(a.buffer);
  }

  /** Destroys the free buffers (their memory goes back to the driver). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
  }
}
