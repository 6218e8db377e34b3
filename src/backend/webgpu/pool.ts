// Max-pool forward (value and argmax) and backward. The forward is one thread per output; the backward
// is a gather, one thread per input element over the windows that contain it, adding the gradients of
// those whose argmax it is in output order (the reference's scatter order), so overlapping windows need
// no atomics. NaN is detected on the bits (WGSL lets compilers assume float compares see no NaN).
import type { Pool2dGeometry } from "../backend.js";
import { checkPool } from "../checks.js";
import type { DeviceArray } from "./buffers.js";
import { type GpuContext, grid, LINEAR_BUILTINS, LINEAR_INDEX, Params, WG } from "./context.js";
import { expectDeviceLength } from "./gemm.js";

const FIELDS =
  "total: u32, c: u32, h: u32, w: u32, kh: u32, kw: u32, sh: u32, sw: u32, ph: i32, pw: i32, outH: u32, outW: u32, negInf: f32";

function params(total: number, g: Pool2dGeometry): Params {
  return new Params()
    .u32(total)
    .u32(g.c)
    .u32(g.h)
    .u32(g.w)
    .u32(g.kh)
    .u32(g.kw)
    .u32(g.strideH)
    .u32(g.strideW)
    .i32(g.padH)
    .i32(g.padW)
    .u32(g.outH)
    .u32(g.outW)
    .f32(Number.NEGATIVE_INFINITY);
}

const FORWARD_SHADER = /* wgsl */ `
struct P { ${FIELDS} };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax: array<i32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
fn isNan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let o = ${LINEAR_INDEX};
  if (o >= p.total) { return; }
  let plane = p.outH * p.outW;
  let nc = o / plane;
  let oy = (o % plane) / p.outW;
  let ox = o % p.outW;
  let xOff = nc * p.h * p.w;
  var best = p.negInf;
  var bestIdx = -1;
  var done = false;
  for (var ki = 0u; ki < p.kh && !done; ki++) {
    let iy = i32(oy * p.sh + ki) - p.ph;
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    for (var kj = 0u; kj < p.kw; kj++) {
      let ix = i32(ox * p.sw + kj) - p.pw;
      if (ix < 0 || ix >= i32(p.w)) { continue; }
      let idx = iy * i32(p.w) + ix;
      let v = x[xOff + u32(idx)];
      if (v > best || isNan(v) || bestIdx < 0) {
        best = v;
        bestIdx = idx;
        if (isNan(v)) { done = true; break; }
      }
    }
  }
  y[o] = best;
  argmax[o] = bestIdx;
}`;

/** y = max over each window, argmax = flat index into the (h, w) plane, as Backend.maxPool2dForward. */
export function maxPool2dForward(
  ctx: GpuContext,
  y: DeviceArray,
  argmax: DeviceArray,
  x: DeviceArray,
  g: Pool2dGeometry,
): void {
  const len = checkPool(g);
  expectDeviceLength("y", y, len.y);
  expectDeviceLength("argmax", argmax, len.y);
  expectDeviceLength("x", x, len.x);
  if (argmax.dtype !== "i32") throw new TypeError(`Expected an i32 argmax but received ${argmax.dtype}`);
  ctx.dispatch(FORWARD_SHADER, params(len.y, g), [y, argmax, x], grid(Math.ceil(len.y / WG)));
}

function backwardShader(masked: boolean): string {
  return /* wgsl */ `
struct P { ${FIELDS} };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> argmax: array<i32>;
${masked ? "@group(0) @binding(4) var<storage, read> reluOut: array<f32>;" : ""}
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.total) { return; }
  let inPlane = p.h * p.w;
  let nc = i / inPlane;
  let idx = i32(i % inPlane);
  let iy = idx / i32(p.w);
  let ix = idx % i32(p.w);
  // Windows oy with oy*sh - ph <= iy <= oy*sh - ph + kh - 1, clipped to the output.
  let yHi = min((iy + p.ph) / i32(p.sh), i32(p.outH) - 1);
  let xHi = min((ix + p.pw) / i32(p.sw), i32(p.outW) - 1);
  let yLo = max(0, (iy + p.ph - i32(p.kh) + i32(p.sh)) / i32(p.sh));
  let xLo = max(0, (ix + p.pw - i32(p.kw) + i32(p.sw)) / i32(p.sw));
  let outPlane = p.outH * p.outW;
  var s = 0.0;
  for (var oy = yLo; oy <= yHi; oy++) {
    for (var ox = xLo; ox <= xHi; ox++) {
      let o = nc * outPlane + u32(oy) * p.outW + u32(ox);
      if (argmax[o] != idx) { continue; }
      ${masked ? "if (!(reluOut[o] > 0.0)) { continue; }" : ""}
      s += dy[o];
    }
  }
  dx[i] = s;
}`;
}

/** dx = dy scattered to the argmax positions (ReLU's backward fused with reluOut), as Backend's. */
export function maxPool2dBackward(
  ctx: GpuContext,
  dx: DeviceArray,
  dy: DeviceArray,
  argmax: DeviceArray,
  g: Pool2dGeometry,
  reluOut: DeviceArray | null = null,
): void {
  const len = checkPool(g);
  expectDeviceLength("dx", dx, len.x);
  expectDeviceLength("dy", dy, len.y);
  expectDeviceLength("argmax", argmax, len.y);
  if (reluOut) expectDeviceLength("reluOut", reluOut, len.y);
  const buffers = reluOut ? [dx, dy, argmax, reluOut] : [dx, dy, argmax];
  ctx.dispatch(backwardShader(reluOut !== null), params(len.x, g), buffers, grid(Math.ceil(len.x / WG)));
}
