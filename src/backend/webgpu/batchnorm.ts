// Batch normalisation over (n, c, hw): training forward, the per-channel affine map (inference), and the
// training backward. The statistics are one workgroup per channel: 256 threads stride over the channel's
// n*hw values and a tree in shared memory sums their partial sums (two passes for the variance, about
// the mean, as the reference computes it).
import type { DeviceArray } from "./buffers.js";
import { type GpuContext, grid, LINEAR_BUILTINS, LINEAR_INDEX, Params, WG } from "./context.js";
import { expectDeviceLength } from "./gemm.js";

const REDUCE = /* wgsl */ `
var<workgroup> partial: array<f32, 256>;
fn channelSum(t: u32, v: f32) -> f32 {
  partial[t] = v;
  workgroupBarrier();
  for (var half = 128u; half > 0u; half /= 2u) {
    if (t < half) { partial[t] += partial[t + half]; }
    workgroupBarrier();
  }
  let s = partial[0];
  workgroupBarrier();
  return s;
}`;

function forwardTrainShader(relu: boolean): string {
  return /* wgsl */ `
struct P { n: u32, c: u32, hw: u32, eps: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> saveMean: array<f32>;
@group(0) @binding(3) var<storage, read_write> saveInvStd: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> gamma: array<f32>;
@group(0) @binding(6) var<storage, read> beta: array<f32>;
${REDUCE}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let ch = wid.x;
  let t = lid.x;
  let count = f32(p.n * p.hw);
  var s = 0.0;
  for (var b = 0u; b < p.n; b++) {
    let off = (b * p.c + ch) * p.hw;
    for (var i = t; i < p.hw; i += 256u) { s += x[off + i]; }
  }
  let mean = channelSum(t, s) / count;
  var sq = 0.0;
  for (var b = 0u; b < p.n; b++) {
    let off = (b * p.c + ch) * p.hw;
    for (var i = t; i < p.hw; i += 256u) { let d = x[off + i] - mean; sq += d * d; }
  }
  let invStd = 1.0 / sqrt(channelSum(t, sq) / count + p.eps);
  if (t == 0u) { saveMean[ch] = mean; saveInvStd[ch] = invStd; }
  let scale = gamma[ch] * invStd;
  let shift = beta[ch] - mean * scale;
  for (var b = 0u; b < p.n; b++) {
    let off = (b * p.c + ch) * p.hw;
    for (var i = t; i < p.hw; i += 256u) {
      let v = x[off + i] * scale + shift;
      y[off + i] = ${relu ? "max(v, 0.0)" : "v"};
    }
  }
}`;
}

export function batchNormForwardTrain(
  ctx: GpuContext,
  y: DeviceArray,
  saveMean: DeviceArray,
  saveInvStd: DeviceArray,
  x: DeviceArray,
  gamma: DeviceArray,
  beta: DeviceArray,
  n: number,
  c: number,
  hw: number,
  eps: number,
  relu = false,
): void {
  expectDeviceLength("x", x, n * c * hw);
  expectDeviceLength("y", y, n * c * hw);
  for (const [what, a] of [
    ["saveMean", saveMean],
    ["saveInvStd", saveInvStd],
    ["gamma", gamma],
    ["beta", beta],
  ] as const)
    expectDeviceLength(what, a, c);
  const params = new Params().u32(n).u32(c).u32(hw).f32(eps);
  ctx.dispatch(forwardTrainShader(relu), params, [y, saveMean, saveInvStd, x, gamma, beta], [c, 1, 1]);
}

function affineShader(relu: boolean, inPlace: boolean): string {
  return /* wgsl */ `
struct P { total: u32, c: u32, hw: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> shift: array<f32>;
${inPlace ? "" : "@group(0) @binding(4) var<storage, read> x: array<f32>;"}
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.total) { return; }
  let ch = (i / p.hw) % p.c;
  let v = ${inPlace ? "y" : "x"}[i] * scale[ch] + shift[ch];
  y[i] = ${relu ? "max(v, 0.0)" : "v"};
}`;
}

/** y = x * scale[ch] + shift[ch] (then ReLU), as Backend.channelAffine. y may be x. */
export function channelAffine(
  ctx: GpuContext,
  y: DeviceArray,
  x: DeviceArray,
  scale: DeviceArray,
  shift: DeviceArray,
  n: number,
  c: number,
  hw: number,
  relu = false,
): void {
  const total = n * c * hw;
  expectDeviceLength("x", x, total);
  expectDeviceLength("y", y, total);
  expectDeviceLength("scale", scale, c);
  expectDeviceLength("shift", shift, c);
  const inPlace = x.buffer === y.buffer;
  const buffers = inPlace ? [y, scale, shift] : [y, scale, shift, x];
  ctx.dispatch(
    affineShader(relu, inPlace),
    new Params().u32(total).u32(c).u32(hw),
    buffers,
    grid(Math.ceil(total / WG)),
  );
}

// With xhat = (x - mean) * invStd and m = n*hw: dx = gamma * invStd / m * (m dy - sum(dy) - xhat sum(dy xhat)).
const BACKWARD_SHADER = /* wgsl */ `
struct P { n: u32, c: u32, hw: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> x: array<f32>;
@group(0) @binding(6) var<storage, read> gamma: array<f32>;
@group(0) @binding(7) var<storage, read> saveMean: array<f32>;
@group(0) @binding(8) var<storage, read> saveInvStd: array<f32>;
${REDUCE}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let ch = wid.x;
  let t = lid.x;
  let mean = saveMean[ch];
  let invStd = saveInvStd[ch];
  var sdy = 0.0;
  var sdyx = 0.0;
  for (var b = 0u; b < p.n; b++) {
    let off = (b * p.c + ch) * p.hw;
    for (var i = t; i < p.hw; i += 256u) {
      let g = dy[off + i];
      sdy += g;
      sdyx += g * (x[off + i] - mean) * invStd;
    }
  }
  let sumDy = channelSum(t, sdy);
  let sumDyXhat = channelSum(t, sdyx);
  if (t == 0u) { dgamma[ch] = sumDyXhat; dbeta[ch] = sumDy; }
  let m = f32(p.n * p.hw);
  let k = gamma[ch] * invStd / m;
  for (var b = 0u; b < p.n; b++) {
    let off = (b * p.c + ch) * p.hw;
    for (var i = t; i < p.hw; i += 256u) {
      let xhat = (x[off + i] - mean) * invStd;
      dx[off + i] = k * (m * dy[off + i] - sumDy - xhat * sumDyXhat);
    }
  }
}`;

export function batchNormBackward(
  ctx: GpuContext,
  dx: DeviceArray,
  dgamma: DeviceArray,
  dbeta: DeviceArray,
  dy: DeviceArray,
  x: DeviceArray,
  gamma: DeviceArray,
  saveMean: DeviceArray,
  saveInvStd: DeviceArray,
  n: number,
  c: number,
  hw: number,
): void {
  for (const [what, a] of [
    ["dx", dx],
    ["dy", dy],
    ["x", x],
  ] as const)
    expectDeviceLength(what, a, n * c * hw);
  for (const [what, a] of [
    ["dgamma", dgamma],
    ["dbeta", dbeta],
    ["gamma", gamma],
    ["saveMean", saveMean],
    ["saveInvStd", saveInvStd],
  ] as const)
    expectDeviceLength(what, a, c);
  const buffers = [dx, dgamma, dbeta, dy, x, gamma, saveMean, saveInvStd];
  ctx.dispatch(BACKWARD_SHADER, new Params().u32(n).u32(c).u32(hw), buffers, [c, 1, 1]);
}

const RUNNING_SHADER = /* wgsl */ `
struct P { c: u32, momentum: f32, eps: f32, unbias: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> runningMean: array<f32>;
@group(0) @binding(2) var<storage, read_write> runningVar: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> invStd: array<f32>;
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let ch = ${LINEAR_INDEX};
  if (ch >= p.c) { return; }
  let biasedVar = 1.0 / (invStd[ch] * invStd[ch]) - p.eps;
  runningMean[ch] = (1.0 - p.momentum) * runningMean[ch] + p.momentum * mean[ch];
  runningVar[ch] = (1.0 - p.momentum) * runningVar[ch] + p.momentum * biasedVar * p.unbias;
}`;

/**
 * The running statistics after a training batch of `count` values per channel, as PyTorch updates them:
 * mean and the unbiased variance (from the batch's inverse std) mixed in with weight `momentum`.
 */
export function updateRunningStats(
  ctx: GpuContext,
  runningMean: DeviceArray,
  runningVar: DeviceArray,
  mean: DeviceArray,
  invStd: DeviceArray,
  momentum: number,
  eps: number,
  count: number,
): void {
  const c = mean.length;
  for (const [what, a] of [
    ["runningMean", runningMean],
    ["runningVar", runningVar],
    ["invStd", invStd],
  ] as const)
    expectDeviceLength(what, a, c);
  const params = new Params()
    .u32(c)
    .f32(momentum)
    .f32(eps)
    .f32(count / (count - 1));
  ctx.dispatch(RUNNING_SHADER, params, [runningMean, runningVar, mean, invStd], grid(Math.ceil(c / WG)));
}

const FIXED_SHADER = /* wgsl */ `
struct P { c: u32, eps: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> shift: array<f32>;
@group(0) @binding(3) var<storage, read> runningMean: array<f32>;
@group(0) @binding(4) var<storage, read> runningVar: array<f32>;
@group(0) @binding(5) var<storage, read> gamma: array<f32>;
@group(0) @binding(6) var<storage, read> beta: array<f32>;
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let ch = ${LINEAR_INDEX};
  if (ch >= p.c) { return; }
  let s = gamma[ch] / sqrt(runningVar[ch] + p.eps);
  scale[ch] = s;
  shift[ch] = beta[ch] - runningMean[ch] * s;
}`;

/** Batch norm with fixed statistics as a per-channel scale and shift (for channelAffine). */
export function runningScaleShift(
  ctx: GpuContext,
  scale: DeviceArray,
  shift: DeviceArray,
  runningMean: DeviceArray,
  runningVar: DeviceArray,
  gamma: DeviceArray,
  beta: DeviceArray,
  eps: number,
): void {
  const c = scale.length;
  for (const [what, a] of [
    ["shift", shift],
    ["runningMean", runningMean],
    ["runningVar", runningVar],
    ["gamma", gamma],
    ["beta", beta],
  ] as const)
    expectDeviceLength(what, a, c);
  const buffers = [scale, shift, runningMean, runningVar, gamma, beta];
  ctx.dispatch(FIXED_SHADER, new Params().u32(c).f32(eps), buffers, grid(Math.ceil(c / WG)));
}
