// GpuContext: one device, its compiled pipelines, a buffer pool and one open command encoder. Kernels
// append dispatches to the open compute pass; nothing reaches the GPU until flush() (or a read, an upload,
// or a full parameter arena) submits, so a training step is a handful of submits.
//
// Every dispatch has its own 256-byte slot of kernel parameters in one uniform "arena" buffer, written
// with one queue.writeBuffer just before the submit that reads it (queue order keeps earlier submits on
// the earlier contents). Binding 0 of every kernel is its parameters; the storage buffers follow.
/// <reference types="@webgpu/types" />
import { type DeviceArray, type DeviceDType, GpuBufferPool, MapMode, Usage } from "./buffers.js";
import { requestWebGpuDevice, type WebGpuAdapterSummary } from "./device.js";

const SLOT_BYTES = 256;
const ARENA_SLOTS = 256;
/** Threads per workgroup of the one-dimensional kernels. */
export const WG = 256;

/** Kernel parameters in declaration order: the WGSL struct must list the same fields, 4 bytes each. */
export class Params {
  readonly values: number[] = [];
  readonly kinds: ("u32" | "i32" | "f32")[] = [];

  u32(v: number): this {
    return this.push(v, "u32");
  }
  i32(v: number): this {
    return this.push(v, "i32");
  }
  f32(v: number): this {
    return this.push(v, "f32");
  }
  private push(v: number, kind: "u32" | "i32" | "f32"): this {
    if (this.values.length === SLOT_BYTES / 4) throw new RangeError("Too many kernel parameters");
    this.values.push(v);
    this.kinds.push(kind);
    return this;
  }
}

/** The workgroup grid for `count` workgroups in one dimension, folded into y past the per-dimension limit. */
export function grid(count: number): [number, number, number] {
  const x = Math.min(Math.max(count, 1), 65535);
  return [x, Math.ceil(Math.max(count, 1) / x), 1];
}

/** WGSL: the linear index of this thread in a `grid()` launch (needs wid, nwg, lid builtins). */
export const LINEAR_INDEX = "(wid.y * nwg.x + wid.x) * 256u + lid.x";
export const LINEAR_BUILTINS =
  "@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u";

export class GpuContext {
  readonly pool: GpuBufferPool;
  /** Command buffers submitted so far (tests check a step takes a handful). */
  submits = 0;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arena: GPUBuffer;
  private readonly staging = new ArrayBuffer(SLOT_BYTES * ARENA_SLOTS);
  private slots = 0;
  private error: Error | null = null;

  constructor(
    readonly device: GPUDevice,
    readonly adapter: WebGpuAdapterSummary,
  ) {
    this.pool = new GpuBufferPool(device);
    this.arena = device.createBuffer({
      size: SLOT_BYTES * ARENA_SLOTS,
      usage: Usage.UNIFORM | Usage.COPY_DST,
    });
    device.addEventListener("uncapturederror", (e) => {
      this.error ??= new Error(`WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
    });
  }

  static async create(): Promise<GpuContext> {
    const { device, adapter } = await requestWebGpuDevice();
    return new GpuContext(device, adapter);
  }

  /** The compute pipeline of a WGSL module with entry point `main`, compiled once per source text. */
  private pipeline(wgsl: string): GPUComputePipeline {
    let p = this.pipelines.get(wgsl);
    if (!p) {
      const module = this.device.createShaderModule({ code: wgsl });
      p = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
      this.pipelines.set(wgsl, p);
    }
    return p;
  }

  /** Encodes one dispatch of `wgsl` over `groups` workgroups with `params` and `buffers` bound in order. */
  dispatch(wgsl: string, params: Params, buffers: DeviceArray[], groups: [number, number, number]): void {
    if (groups[0] === 0 || groups[1] === 0 || groups[2] === 0) return;
    if (this.slots === ARENA_SLOTS) this.flush();
    const slot = this.slots++;
    const u = new Uint32Array(this.staging, slot * SLOT_BYTES, SLOT_BYTES / 4);
    const i = new Int32Array(this.staging, slot * SLOT_BYTES, SLOT_BYTES / 4);
    const f = new Float32Array(this.staging, slot * SLOT_BYTES, SLOT_BYTES / 4);
    params.values.forEach((v, k) => {
      const kind = params.kinds[k];
      if (kind === "f32") f[k] = v;
      else if (kind === "i32") i[k] = v;
      else u[k] = v;
    });
    const pipeline = this.pipeline(wgsl);
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: this.arena, offset: slot * SLOT_BYTES, size: SLOT_BYTES } },
    ];
    buffers.forEach((b, k) => {
      entries.push({ binding: k + 1, resource: { buffer: b.buffer } });
    });
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    this.encoder ??= this.device.createCommandEncoder();
    this.pass ??= this.encoder.beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
  }

  /** Copies `src` into `dst` (whole length of src), in order with the dispatches. */
  copy(dst: DeviceArray, src: DeviceArray): void {
    if (dst.length < src.length)
      throw new RangeError(`Expected a destination of length >= ${src.length} but received ${dst.length}`);
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    if (src.length > 0)
      this.encoder.copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, Math.ceil(src.byteLength / 4) * 4);
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  /** Submits everything encoded so far. */
  flush(): void {
    this.endPass();
    if (this.slots > 0)
      this.device.queue.writeBuffer(this.arena, 0, this.staging, 0, this.slots * SLOT_BYTES);
    this.slots = 0;
    if (this.encoder) {
      this.device.queue.submit([this.encoder.finish()]);
      this.submits++;
    }
    this.encoder = null;
  }

  /** A new device array holding `data` (the pending work is submitted first, see buffers.ts). */
  upload(data: Float32Array | Int32Array | Uint32Array, into?: DeviceArray): DeviceArray {
    const dtype: DeviceDType =
      data instanceof Float32Array ? "f32" : data instanceof Int32Array ? "i32" : "u32";
    const a = into ?? this.pool.acquire(data.length, dtype);
    if (a.length !== data.length)
      throw new RangeError(`Expected ${a.length} values to upload but received ${data.length}`);
    this.flush();
    if (data.length > 0)
      this.device.queue.writeBuffer(a.buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    return a;
  }

  /** Submits the pending work and reads `a` back to the host once the GPU has run it. */
  async read(a: DeviceArray): Promise<Float32Array | Int32Array | Uint32Array> {
    const bytes = Math.max(4, a.byteLength);
    const staging = this.device.createBuffer({
      size: Math.ceil(bytes / 4) * 4,
      usage: Usage.MAP_READ | Usage.COPY_DST,
    });
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(a.buffer, 0, staging, 0, staging.size);
    this.flush();
    await staging.mapAsync(MapMode.READ);
    const copy = staging.getMappedRange().slice(0, a.byteLength);
    staging.unmap();
    staging.destroy();
    this.throwIfFailed();
    if (a.dtype === "i32") return new Int32Array(copy);
    if (a.dtype === "u32") return new Uint32Array(copy);
    return new Float32Array(copy);
  }

  async readFloat32(a: DeviceArray): Promise<Float32Array> {
    if (a.dtype !== "f32") throw new TypeError(`Expected an f32 device array but received ${a.dtype}`);
    return (await this.read(a)) as Float32Array;
  }

  /** Waits for every submitted command and throws the first validation or out-of-memory error seen. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    const e = this.error;
    if (e) {
      this.error = null;
      throw e;
    }
  }

  destroy(): void {
    this.pool.trim();
    this.device.destroy();
  }
}
