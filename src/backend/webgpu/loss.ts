// Softmax cross-entropy, mean over the batch, with its gradient: one thread per row writes the row's loss
// and (softmax - onehot) / n; one workgroup then sums the row losses into the mean, which stays on the
// device (read it with GpuContext.read when it is wanted). A target outside [0, c) gives NaN in its row
// and the loss: the GPU cannot throw, so callers check targets on the host, where they come from.
import type { DeviceArray } from "./buffers.js";
import { type GpuContext, grid, LINEAR_BUILTINS, LINEAR_INDEX, Params, WG } from "./context.js";
import { expectDeviceLength } from "./gemm.js";

const ROWS_SHADER = /* wgsl */ `
struct P { n: u32, c: u32, nan: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(2) var<storage, read_write> rowLoss: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<i32>;
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let row = ${LINEAR_INDEX};
  if (row >= p.n) { return; }
  let off = row * p.c;
  let t = targets[row];
  if (t < 0 || u32(t) >= p.c) {
    rowLoss[row] = p.nan;
    for (var j = 0u; j < p.c; j++) { dlogits[off + j] = p.nan; }
    return;
  }
  var mx = logits[off];
  for (var j = 1u; j < p.c; j++) { mx = max(mx, logits[off + j]); }
  var sum = 0.0;
  for (var j = 0u; j < p.c; j++) { sum += exp(logits[off + j] - mx); }
  let logSum = log(sum) + mx;
  rowLoss[row] = logSum - logits[off + u32(t)];
  let invN = 1.0 / f32(p.n);
  for (var j = 0u; j < p.c; j++) {
    let onehot = select(0.0, 1.0, j == u32(t));
    dlogits[off + j] = (exp(logits[off + j] - logSum) - onehot) * invN;
  }
}`;

const MEAN_SHADER = /* wgsl */ `
struct P { n: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read> rowLoss: array<f32>;
var<workgroup> partial: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3u) {
  var s = 0.0;
  for (var i = lid.x; i < p.n; i += 256u) { s += rowLoss[i]; }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var half = 128u; half > 0u; half /= 2u) {
    if (lid.x < half) { partial[lid.x] += partial[lid.x + half]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { loss[0] = partial[0] / f32(p.n); }
}`;

/** dlogits (n, c) and loss (1) of softmax cross-entropy over logits (n, c) and i32 targets (n). */
export function softmaxCrossEntropy(
  ctx: GpuContext,
  dlogits: DeviceArray,
  loss: DeviceArray,
  logits: DeviceArray,
  targets: DeviceArray,
  n: number,
  c: number,
): void {
  expectDeviceLength("logits", logits, n * c);
  expectDeviceLength("dlogits", dlogits, n * c);
  expectDeviceLength("targets", targets, n);
  expectDeviceLength("loss", loss, 1);
  if (targets.dtype !== "i32") throw new TypeError(`Expected i32 targets but received ${targets.dtype}`);
  const rowLoss = ctx.pool.acquire(n);
  const rows = new Params().u32(n).u32(c).f32(Number.NaN);
  ctx.dispatch(ROWS_SHADER, rows, [dlogits, rowLoss, logits, targets], grid(Math.ceil(n / WG)));
  ctx.dispatch(MEAN_SHADER, new Params().u32(n), [loss, rowLoss], [1, 1, 1]);
  ctx.pool.release(rowLoss);
}
