// Element-wise kernels (ReLU and its backward, multiply by a mask, add, row bias) and dropout's mask.
//
// Dropout draws the same numbers as the CPU backends: mask[i] is decided by the (i+1)-th draw of the
// generator's xoshiro128** stream. The stream is cut into chunks of CHUNK draws; one GPU thread runs the
// generator through one chunk from that chunk's start state. xoshiro's state update is linear over GF(2),
// so CHUNK steps are one 128x128 bit matrix J (built once, below): the host finds the chunk starts as
// s, J s, J^2 s, ... (a few hundred word operations per chunk instead of CHUNK generator steps) and
// uploads them, and leaves the generator's state where len draws would have.
import type { DeviceArray } from "./buffers.js";
import { type GpuContext, grid, LINEAR_BUILTINS, LINEAR_INDEX, Params, WG } from "./context.js";
import { expectDeviceLength } from "./gemm.js";

function unaryShader(body: string, inputs: string[], inPlace: boolean): string {
  // y may be one of the inputs: WebGPU forbids binding one buffer both writable and read-only in a
  // dispatch, so the in-place variant binds only y.
  const decls = inPlace
    ? inputs.slice(1).map((name, k) => `@group(0) @binding(${k + 2}) var<storage, read> ${name}: array<f32>;`)
    : inputs.map((name, k) => `@group(0) @binding(${k + 2}) var<storage, read> ${name}: array<f32>;`);
  const src = inPlace ? body.replaceAll(`${inputs[0]}[i]`, "y[i]") : body;
  return /* wgsl */ `
struct P { total: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
${decls.join("\n")}
fn isNan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.total) { return; }
  ${src}
}`;
}

/** y = op over `inputs` (the first may be y itself), one thread per element. */
function elementwise(
  ctx: GpuContext,
  body: string,
  names: string[],
  y: DeviceArray,
  inputs: DeviceArray[],
): void {
  inputs.forEach((a, k) => {
    expectDeviceLength(names[k], a, y.length);
  });
  const inPlace = inputs[0].buffer === y.buffer;
  for (let k = 1; k < inputs.length; k++)
    if (inputs[k].buffer === y.buffer) throw new RangeError(`Expected ${names[k]} not to share y's buffer`);
  const buffers = inPlace ? [y, ...inputs.slice(1)] : [y, ...inputs];
  const shader = unaryShader(body, names, inPlace);
  ctx.dispatch(shader, new Params().u32(y.length), buffers, grid(Math.ceil(y.length / WG)));
}

/** y = max(x, 0), NaN kept. y may be x. */
export function relu(ctx: GpuContext, y: DeviceArray, x: DeviceArray): void {
  elementwise(ctx, "let v = x[i]; y[i] = select(0.0, v, v > 0.0 || isNan(v));", ["x"], y, [x]);
}

/** dx = dy where y > 0 else 0. dx may be dy. */
export function reluBackward(ctx: GpuContext, dx: DeviceArray, dy: DeviceArray, y: DeviceArray): void {
  elementwise(ctx, "y[i] = select(0.0, dy[i], out[i] > 0.0);", ["dy", "out"], dx, [dy, y]);
}

/** y = x * mask. y may be x. */
export function mul(ctx: GpuContext, y: DeviceArray, x: DeviceArray, mask: DeviceArray): void {
  elementwise(ctx, "y[i] = x[i] * mask[i];", ["x", "mask"], y, [x, mask]);
}

/** y += x. */
export function addInPlace(ctx: GpuContext, y: DeviceArray, x: DeviceArray): void {
  elementwise(ctx, "y[i] = y0[i] + x[i];", ["y0", "x"], y, [y, x]);
}

const FILL_SHADER = /* wgsl */ `
struct P { total: u32, value: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.total) { return; }
  y[i] = p.value;
}`;

/** y[i] = value for every element. */
export function fill(ctx: GpuContext, y: DeviceArray, value: number): void {
  ctx.dispatch(FILL_SHADER, new Params().u32(y.length).f32(value), [y], grid(Math.ceil(y.length / WG)));
}

const SCALE_SHADER = /* wgsl */ `
struct P { total: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.total) { return; }
  y[i] = x[i] * s[0];
}`;

/** y = x * s[0], s a one-element device array (a loss's upstream gradient, kept on the device). */
export function scaleByScalar(ctx: GpuContext, y: DeviceArray, x: DeviceArray, s: DeviceArray): void {
  expectDeviceLength("x", x, y.length);
  expectDeviceLength("s", s, 1);
  ctx.dispatch(SCALE_SHADER, new Params().u32(y.length), [y, x, s], grid(Math.ceil(y.length / WG)));
}

const ROW_BIAS_SHADER = /* wgsl */ `
struct P { total: u32, cols: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let i = ${LINEAR_INDEX};
  if (i >= p.total) { return; }
  y[i] += bias[i % p.cols];
}`;

/** y (rows, cols) += bias (cols) on every row. */
export function addRowBias(
  ctx: GpuContext,
  y: DeviceArray,
  bias: DeviceArray,
  rows: number,
  cols: number,
): void {
  expectDeviceLength("y", y, rows * cols);
  expectDeviceLength("bias", bias, cols);
  const total = rows * cols;
  ctx.dispatch(ROW_BIAS_SHADER, new Params().u32(total).u32(cols), [y, bias], grid(Math.ceil(total / WG)));
}

/** Draws per GPU thread of the dropout mask. */
export const CHUNK = 256;

/** One xoshiro128** state update (the output function aside), in place: linear over GF(2). */
function step(s: Uint32Array): void {
  const t = (s[1] << 9) >>> 0;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = ((s[3] << 11) | (s[3] >>> 21)) >>> 0;
}

/** J = the state update applied CHUNK times, as 128 columns (the image of each state bit), 4 words each. */
const jump: Uint32Array = (() => {
  const cols = new Uint32Array(128 * 4);
  const s = new Uint32Array(4);
  for (let bit = 0; bit < 128; bit++) {
    s.fill(0);
    s[bit >>> 5] = 1 << (bit & 31);
    for (let k = 0; k < CHUNK; k++) step(s);
    cols.set(s, bit * 4);
  }
  return cols;
})();

/** out = J s. */
function applyJump(out: Uint32Array, outOff: number, s: Uint32Array, sOff: number): void {
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  for (let w = 0; w < 4; w++) {
    let word = s[sOff + w];
    while (word !== 0) {
      const low = 31 - Math.clz32(word & -word);
      word &= word - 1;
      const col = ((w << 5) | low) * 4;
      a ^= jump[col];
      b ^= jump[col + 1];
      c ^= jump[col + 2];
      d ^= jump[col + 3];
    }
  }
  out[outOff] = a >>> 0;
  out[outOff + 1] = b >>> 0;
  out[outOff + 2] = c >>> 0;
  out[outOff + 3] = d >>> 0;
}

/**
 * The start state of each chunk of `len` draws from `state` (4 words per chunk), and `state` advanced
 * by len draws in place, as len calls of Generator.nextUint32() would leave it.
 */
export function chunkStartStates(state: Uint32Array, len: number): Uint32Array {
  const chunks = Math.ceil(len / CHUNK);
  const starts = new Uint32Array(Math.max(1, chunks) * 4);
  starts.set(state.subarray(0, 4));
  for (let c = 1; c < chunks; c++) applyJump(starts, c * 4, starts, (c - 1) * 4);
  const full = Math.floor(len / CHUNK);
  const end = new Uint32Array(4);
  if (full < chunks) end.set(starts.subarray(full * 4, full * 4 + 4));
  else applyJump(end, 0, starts, (chunks - 1) * 4);
  for (let k = 0; k < len % CHUNK; k++) step(end);
  state.set(end);
  return starts;
}

const DROPOUT_SHADER = /* wgsl */ `
struct P { total: u32, threshold: u32, dropAll: u32, keep: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;
@group(0) @binding(2) var<storage, read> starts: array<u32>;
fn rotl(x: u32, k: u32) -> u32 { return (x << k) | (x >> (32u - k)); }
@compute @workgroup_size(256)
fn main(${LINEAR_BUILTINS}) {
  let chunk = ${LINEAR_INDEX};
  let first = chunk * ${CHUNK}u;
  if (first >= p.total) { return; }
  var s0 = starts[chunk * 4u];
  var s1 = starts[chunk * 4u + 1u];
  var s2 = starts[chunk * 4u + 2u];
  var s3 = starts[chunk * 4u + 3u];
  let last = min(first + ${CHUNK}u, p.total);
  for (var i = first; i < last; i++) {
    let r = rotl(s1 * 5u, 7u) * 9u;
    let t = s1 << 9u;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11u);
    mask[i] = select(0.0, p.keep, r >= p.threshold && p.dropAll == 0u);
  }
}`;

/**
 * mask[i] = u >= p ? keep : 0 for the next uniform draws u = r / 2^32 of the generator whose 4 state
 * words are `state` (advanced in place), as Backend.dropoutMask. u >= p exactly when r >= ceil(p 2^32).
 */
export function dropoutMask(
  ctx: GpuContext,
  mask: DeviceArray,
  p: number,
  keep: number,
  state: Uint32Array,
): void {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`Expected a dropout probability in [0, 1] but received ${p}`);
  if (state.length !== 4)
    throw new RangeError(`Expected 4 generator state words but received ${state.length}`);
  const len = mask.length;
  const starts = ctx.upload(chunkStartStates(state, len));
  const threshold = Math.ceil(p * 4294967296);
  const params = new Params()
    .u32(len)
    .u32(Math.min(threshold, 4294967295))
    .u32(threshold > 4294967295 ? 1 : 0)
    .f32(keep);
  ctx.dispatch(DROPOUT_SHADER, params, [mask, starts], grid(Math.ceil(Math.ceil(len / CHUNK) / WG)));
  ctx.pool.release(starts);
}
