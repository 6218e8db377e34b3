// SGD with momentum, dampening, Nesterov and weight decay, with torch.optim.SGD's update rule:
//   d = g + wd * p;  buf = m * buf + (1 - dampening) * d  (buf = d on the first step);
//   d = nesterov ? d + m * buf : buf;  p -= lr * d
import { backend } from "../backend/index.js";
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
  /** Momentum buffers, created on each parameter's first step. */
  private buffers: (Float32Array | null)[];

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
      if (this.momentum !== 0 && !buf) buf = this.buffers[i] = new Float32Array(p.size);
      backend().sgdStep(p.data, grad.data, buf, {
        lr: this.lr,
        momentum: this.momentum,
        dampening: this.dampening,
        weightDecay: this.weightDecay,
        nesterov: this.nesterov,
        firstStep,
      });
      p.markModified();
    });
  }

  zeroGrad(): void {
    for (const p of this.params) p.clearGrad();
  }

  /** Momentum buffers by parameter index (null before a parameter's first step), for checkpoints. */
  stateBuffers(): (Float32Array | null)[] {
    return this.buffers;
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
