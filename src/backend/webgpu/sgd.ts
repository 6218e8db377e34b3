// One SGD step in place (torch.optim.SGD): d = grad + weightDecay * param; with momentum,
// buf = firstStep ? d : momentum * buf + (1 - dampening) * d and d = nesterov ? d + momentum * buf : buf;
// then param -= lr * d. One thread per element.
import type { SgdOptions } from "../backend.js";
import type { DeviceArray } from "./buffers.js";
import { type GpuContext, grid, LINEAR_BUILTINS, LINEAR_INDEX, Params, WG } from "./context.js";
import { expectDeviceLength } from "./gemm.js";

function sgdShader(momentum: boolean, nesterov: boolean, firstStep: boolean): string {
  const update = !momentum
    ? ""
    : `buf[i] = ${firstStep ? "d" : "p.momentum * buf[i] + (1.0 - p.dampening) * d"};
  d = ${nesterov ? "d + p.momentum * buf[i]" : "buf[i]"};`;
  return /* wgsl */ `
struct P { total: u32, lr: f32, momentum: f32, dampening: f32, weightDecay: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
${momentum ? "@group(0) @binding(3) var<storage, read_write> buf: array<f32>;" : ""}
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.total) { return; }
  var d = grad[i] + p.weightDecay * param[i];
  ${update}
  param[i] -= p.lr * d;
}`;
}

/** One SGD update of param (and the momentum buffer when momentum > 0), as Backend.sgdStep. */
export function sgdStep(
  ctx: GpuContext,
  param: DeviceArray,
  grad: DeviceArray,
  momentumBuf: DeviceArray | null,
  o: SgdOptions,
): void {
  expectDeviceLength("grad", grad, param.length);
  const momentum = o.momentum !== 0 && momentumBuf !== null;
  if (momentumBuf) expectDeviceLength("momentum buffer", momentumBuf, param.length);
  const params = new Params().u32(param.length).f32(o.lr).f32(o.momentum).f32(o.dampening).f32(o.weightDecay);
  const buffers = momentum ? [param, grad, momentumBuf] : [param, grad];
  const shader = sgdShader(momentum, o.nesterov, o.firstStep);
  ctx.dispatch(shader, params, buffers, grid(Math.ceil(param.length / WG)));
}
