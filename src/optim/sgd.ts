// SGD with momentum, dampening, Nesterov and weight decay, with torch.optim.SGD's update rule:
//   d = g + wd * p;  buf = m * buf + (1 - dampening) * d  (buf = d on the first step);
//   d = nesterov ? d + m * buf : buf;  p -= lr * d
import { backend } from "../backend/index.js";
import { GpuStorage } from "../backend/webgpu/device-tensor.js";
import { sgdStep } from "../backend/webgpu/sgd.js";
import type { Parameter } from "../tensor.js";

export interface SgdConfig {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

export class SGD {
  lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  /** Momentum buffers, created on each parameter's first step (on the parameter's device). */
  private buffers: (Float32Array | GpuStorage | null)[];

  constructor(
    readonly params: readonly Parameter[],
    config: SgdConfig,
  ) {
    this.lr = config.lr;
    this.momentum = config.momentum ?? 0;
    this.dampening = config.dampening ?? 0;
    this.weightDecay = config.weightDecay ?? 0;
    this.nesterov = config.nesterov ?? false;
    for (const [k, v] of Object.entries({
      lr: this.lr,
      momentum: this.momentum,
      weightDecay: this.weightDecay,
    }))
      if (!(v >= 0 && Number.isFinite(v)))
        throw new RangeError(`Expected ${k} >= 0 for SGD but received ${v}`);
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0))
      throw new RangeError("Nesterov momentum requires momentum > 0 and zero dampening");
    this.buffers = params.map(() => null);
  }

  step(): void {
    this.params.forEach((p, i) => {
      const grad = p.peekGrad();
      if (!grad) return;
      let buf = this.buffers[i];
      const firstStep = buf === null;
      const o = {
        lr: this.lr,
        momentum: this.momentum,
        dampening: this.dampening,
        weightDecay: this.weightDecay,
        nesterov: this.nesterov,
        firstStep,
      };
      const onDevice = p.deviceStorage;
      if (onDevice instanceof GpuStorage) {
        // On the device: the update runs there, the momentum buffer lives there.
        const dev = onDevice.device;
        if (buf instanceof Float32Array) buf = this.buffers[i] = dev.upload(buf);
        if (this.momentum !== 0 && !buf) buf = this.buffers[i] = dev.alloc(p.size);
        const gs = grad.deviceStorage;
        if (!gs) throw new Error(`Expected the gradient of parameter ${i} on webgpu but it is on the host`);
        const g = dev.storageOf(gs, `the gradient of parameter ${i}`);
        sgdStep(dev.ctx, onDevice.array, g.array, buf ? buf.array : null, o);
      } else {
        if (buf instanceof GpuStorage)
          throw new Error(`SGD's momentum buffer ${i} is on a device but its parameter is on the host`);
        if (this.momentum !== 0 && !buf) buf = this.buffers[i] = new Float32Array(p.size);
        backend().sgdStep(p.data, grad.data, buf, o);
      }
      p.markModified();
    });
  }

  zeroGrad(): void {
    for (const p of this.params) p.clearGrad();
  }

  /**
   * Momentum buffers by parameter index (null before a parameter's first step), for checkpoints; on the
   * host (stateBuffersAsync reads them from a device).
   */
  stateBuffers(): (Float32Array | null)[] {
    return this.buffers.map((b, i) => {
      if (b instanceof GpuStorage)
        throw new Error(
          `SGD's momentum buffer ${i} lives on webgpu; read the buffers with await stateBuffersAsync()`,
        );
      return b;
    });
  }

  /** The momentum buffers in host memory, wherever they live. */
  async stateBuffersAsync(): Promise<(Float32Array | null)[]> {
    return Promise.all(this.buffers.map((b) => (b instanceof GpuStorage ? b.read() : b)));
  }

  loadStateBuffers(buffers: readonly (Float32Array | null)[]): void {
    if (buffers.length !== this.params.length)
      throw new RangeError(`Expected ${this.params.length} momentum buffers but received ${buffers.length}`);
    buffers.forEach((b, i) => {
      if (b && b.length !== this.params[i].size)
        throw new RangeError(
          `Expected momentum buffer ${i} of length ${this.params[i].size} but received ${b.length}`,
        );
    });
    this.buffers = buffers.map((b) => (b ? b.slice() : null));
  }
}
