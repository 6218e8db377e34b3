// Convolution forward and both gradients as implicit GEMMs on the tiled template (gemm.ts): the im2col
// matrix is never written, its elements are gathered from the image as the tiles are staged.
//   forward:      y[img] (cOut, outH*outW)  = w (cOut, cIn*kh*kw) x cols(x[img]) (cIn*kh*kw, outH*outW)
//   input grad:   dx[img] (cIn, h*w)        = w^T gathered as (cIn, cOut*kh*kw) x taps of dy[img]
//                 (cOut*kh*kw, h*w): for input pixel (iy, ix) and tap (ki, kj), dy at
//                 ((iy + padH - ki) / strideH, (ix + padW - kj) / strideW) where that divides exactly
//   weight grad:  dw (cOut, cIn*kh*kw)      = dy as (cOut, n*outH*outW) x cols(x)^T (n*outH*outW, cIn*kh*kw)
// The image is the grid's z for the first two; the weight gradient reduces over the whole batch, split
// over z (below).
// The bias gradient is a per-channel sum of dy (one workgroup per channel).
import type { Conv2dGeometry } from "../backend.js";
import { checkConv } from "../checks.js";
import type { DeviceArray } from "./buffers.js";
import { type GpuContext, grid, LINEAR_BUILTINS, LINEAR_INDEX, Params, WG } from "./context.js";
import { expectDeviceLength, tiledGemmGrid, tiledGemmShader } from "./gemm.js";

const GEOMETRY_FIELDS =
  "cIn: u32, h: u32, w: u32, cOut: u32, kh: u32, kw: u32, sh: u32, sw: u32, ph: i32, pw: i32, outH: u32, outW: u32,";

function geometryParams(m: number, n: number, k: number, g: Conv2dGeometry): Params {
  return new Params()
    .u32(m)
    .u32(n)
    .u32(k)
    .u32(g.cIn)
    .u32(g.h)
    .u32(g.w)
    .u32(g.cOut)
    .u32(g.kh)
    .u32(g.kw)
    .u32(g.strideH)
    .u32(g.strideW)
    .i32(g.padH)
    .i32(g.padW)
    .u32(g.outH)
    .u32(g.outW);
}

/** WGSL: x at image `img`, channel-tap row `k` (ci, ki, kj) and output pixel `col` (0 in the padding). */
const GATHER_X = /* wgsl */ `
fn gatherX(img: u32, k: u32, col: u32) -> f32 {
  let taps = p.kh * p.kw;
  let ci = k / taps;
  let ki = (k % taps) / p.kw;
  let kj = k % p.kw;
  let iy = i32((col / p.outW) * p.sh + ki) - p.ph;
  let ix = i32((col % p.outW) * p.sw + kj) - p.pw;
  if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) { return 0.0; }
  return x[((img * p.cIn + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}`;

function forwardShader(bias: boolean, relu: boolean): string {
  return tiledGemmShader({
    fields: GEOMETRY_FIELDS,
    bindings: `
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> wt: array<f32>;
${bias ? "@group(0) @binding(4) var<storage, read> bias: array<f32>;" : ""}
${GATHER_X}`,
    loadA: "fn loadA(z: u32, r: u32, k: u32) -> f32 { return wt[r * p.k + k]; }",
    loadB: "fn loadB(z: u32, k: u32, col: u32) -> f32 { return gatherX(z, k, col); }",
    store: `fn store(z: u32, r: u32, col: u32, acc: f32) {
  let v = acc${bias ? " + bias[r]" : ""};
  y[(z * p.m + r) * p.n + col] = ${relu ? "select(v, 0.0, v < 0.0)" : "v"};
}`,
    aAlongK: true,
    bAlongN: true,
  });
}

/** y = conv(x, w) + bias, then ReLU when `relu` is set, as Backend.conv2dForward. */
export function conv2dForward(
  ctx: GpuContext,
  y: DeviceArray,
  x: DeviceArray,
  w: DeviceArray,
  bias: DeviceArray | null,
  g: Conv2dGeometry,
  relu: boolean,
): void {
  const len = checkConv(g);
  expectDeviceLength("y", y, len.y);
  expectDeviceLength("x", x, len.x);
  expectDeviceLength("w", w, len.w);
  if (bias) expectDeviceLength("bias", bias, g.cOut);
  const plane = g.outH * g.outW;
  const buffers = bias ? [y, x, w, bias] : [y, x, w];
  const params = geometryParams(g.cOut, plane, g.cIn * g.kh * g.kw, g);
  ctx.dispatch(forwardShader(bias !== null, relu), params, buffers, tiledGemmGrid(g.cOut, plane, g.n));
}

function backwardInputShader(masked: boolean): string {
  return tiledGemmShader({
    fields: GEOMETRY_FIELDS,
    bindings: `
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> wt: array<f32>;
${masked ? "@group(0) @binding(4) var<storage, read> mask: array<f32>;" : ""}`,
    // Row r is the input channel, k runs over (co, ki, kj).
    loadA: `fn loadA(z: u32, r: u32, k: u32) -> f32 {
  let taps = p.kh * p.kw;
  return wt[((k / taps) * p.cIn + r) * taps + k % taps];
}`,
    loadB: `fn loadB(z: u32, k: u32, col: u32) -> f32 {
  let taps = p.kh * p.kw;
  let co = k / taps;
  let ki = (k % taps) / p.kw;
  let kj = k % p.kw;
  let ty = i32(col / p.w) + p.ph - i32(ki);
  let tx = i32(col % p.w) + p.pw - i32(kj);
  if (ty < 0 || tx < 0) { return 0.0; }
  let oy = u32(ty) / p.sh;
  let ox = u32(tx) / p.sw;
  if (oy * p.sh != u32(ty) || ox * p.sw != u32(tx) || oy >= p.outH || ox >= p.outW) { return 0.0; }
  return dy[((z * p.cOut + co) * p.outH + oy) * p.outW + ox];
}`,
    store: `fn store(z: u32, r: u32, col: u32, v: f32) {
  let i = (z * p.m + r) * p.n + col;
  dx[i] = ${masked ? "select(0.0, v, mask[i] > 0.0)" : "v"};
}`,
    aAlongK: false,
    bAlongN: false,
  });
}

/** dx = the transposed convolution of dy with w, zeroed where reluMask is not > 0, as Backend's. */
export function conv2dBackwardInput(
  ctx: GpuContext,
  dx: DeviceArray,
  dy: DeviceArray,
  w: DeviceArray,
  g: Conv2dGeometry,
  reluMask: DeviceArray | null = null,
): void {
  const len = checkConv(g);
  expectDeviceLength("dx", dx, len.x);
  expectDeviceLength("dy", dy, len.y);
  expectDeviceLength("w", w, len.w);
  if (reluMask) expectDeviceLength("reluMask", reluMask, len.x);
  const plane = g.h * g.w;
  const buffers = reluMask ? [dx, dy, w, reluMask] : [dx, dy, w];
  const params = geometryParams(g.cIn, plane, g.cOut * g.kh * g.kw, g);
  ctx.dispatch(backwardInputShader(reluMask !== null), params, buffers, tiledGemmGrid(g.cIn, plane, g.n));
}

// The weight gradient's reduction (n * outH * outW, 6.4 million at 224/128 in the first layer) is split
// over the grid's z: split z sums k in [z * chunk, (z + 1) * chunk) into its own slice of a partial
// buffer, and a second pass adds the slices in order (so the result does not depend on scheduling).
// A layer with few output tiles (cOut 64 x 9 taps is one 64x64 tile) would otherwise run as one workgroup.
const BACKWARD_WEIGHT_SHADER = tiledGemmShader({
  fields: `${GEOMETRY_FIELDS} total: u32,`,
  bindings: `
@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
${GATHER_X}`,
  // Row r is the output channel; the reduction index (image, output pixel) is z * p.k + k.
  loadA: `fn loadA(z: u32, r: u32, k: u32) -> f32 {
  let kk = z * p.k + k;
  if (kk >= p.total) { return 0.0; }
  let plane = p.outH * p.outW;
  return dy[((kk / plane) * p.cOut + r) * plane + kk % plane];
}`,
  loadB: `fn loadB(z: u32, k: u32, col: u32) -> f32 {
  let kk = z * p.k + k;
  if (kk >= p.total) { return 0.0; }
  let plane = p.outH * p.outW;
  return gatherX(kk / plane, col, kk % plane);
}`,
  store: "fn store(z: u32, r: u32, col: u32, v: f32) { dw[(z * p.m + r) * p.n + col] = v; }",
  aAlongK: true,
  bAlongN: false,
});

const SUM_SPLITS_SHADER = /* wgsl */ `
struct P { len: u32, splits: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.len) { return; }
  var s = 0.0;
  for (var z = 0u; z < p.splits; z++) { s += partial[z * p.len + i]; }
  dw[i] = s;
}`;

/** Workgroups the weight gradient aims for, and the shortest reduction a split gets (a multiple of 16). */
const TARGET_WORKGROUPS = 128;
const MIN_CHUNK = 128;

/** How the weight gradient's reduction of `total` is split over `tiles` output tiles. */
export function weightGradientSplits(tiles: number, total: number): { splits: number; chunk: number } {
  const want = Math.min(Math.ceil(TARGET_WORKGROUPS / tiles), Math.floor(total / MIN_CHUNK), 65535);
  if (want <= 1) return { splits: 1, chunk: total };
  const chunk = Math.ceil(total / want / 16) * 16;
  return { splits: Math.ceil(total / chunk), chunk };
}

/** db[co] = sum of dy over the images and pixels of channel co: one workgroup per channel. */
const BIAS_GRADIENT_SHADER = /* wgsl */ `
struct P { n: u32, c: u32, plane: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> db: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
var<workgroup> partial: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let ch = wid.x;
  var s = 0.0;
  for (var b = 0u; b < p.n; b++) {
    let off = (b * p.c + ch) * p.plane;
    for (var i = lid.x; i < p.plane; i += 256u) { s += dy[off + i]; }
  }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var half = 128u; half > 0u; half /= 2u) {
    if (lid.x < half) { partial[lid.x] += partial[lid.x + half]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { db[ch] = partial[0]; }
}`;

/** dw = correlation of x with dy, db = sum of dy over (n, outH, outW), as Backend's. */
export function conv2dBackwardWeight(
  ctx: GpuContext,
  dw: DeviceArray,
  db: DeviceArray | null,
  dy: DeviceArray,
  x: DeviceArray,
  g: Conv2dGeometry,
): void {
  const len = checkConv(g);
  expectDeviceLength("dw", dw, len.w);
  expectDeviceLength("dy", dy, len.y);
  expectDeviceLength("x", x, len.x);
  if (db) expectDeviceLength("db", db, g.cOut);
  const kdim = g.cIn * g.kh * g.kw;
  const plane = g.outH * g.outW;
  const total = g.n * plane;
  const [gx, gy] = tiledGemmGrid(g.cOut, kdim);
  const { splits, chunk } = weightGradientSplits(gx * gy, total);
  const params = geometryParams(g.cOut, kdim, chunk, g).u32(total);
  if (splits === 1) ctx.dispatch(BACKWARD_WEIGHT_SHADER, params, [dw, dy, x], [gx, gy, 1]);
  else {
    const partial = ctx.pool.acquire(splits * len.w);
    ctx.dispatch(BACKWARD_WEIGHT_SHADER, params, [partial, dy, x], [gx, gy, splits]);
    ctx.dispatch(
      SUM_SPLITS_SHADER,
      new Params().u32(len.w).u32(splits),
      [dw, partial],
      grid(Math.ceil(len.w / WG)),
    );
    ctx.pool.release(partial);
  }
  if (db)
    ctx.dispatch(
      BIAS_GRADIENT_SHADER,
      new Params().u32(g.n).u32(g.cOut).u32(plane),
      [db, dy],
      [g.cOut, 1, 1],
    );
}
