// Tiled GEMM in WGSL, and the template the implicit-GEMM convolutions share.
//
// A workgroup of 16x16 threads computes a 64x64 tile of C; each thread a 4x4 block of it in registers
// (rows ty + 16i, columns tx + 16j). The K dimension is walked in steps of 16: the workgroup stages a
// 64x16 slice of op(A) and a 16x64 slice of op(B) in shared memory, then every thread does 16 rank-1
// updates of its block from there. The loads are functions of (z, row, k) / (z, k, col) that a kernel
// supplies (a strided matrix here, an im2col gather in conv2d.ts), and the store is the epilogue (beta,
// bias, ReLU); the template bounds-checks rows, columns and k itself. z is the third grid dimension
// (the image, for convolutions).
import type { DeviceArray } from "./buffers.js";
import { type GpuContext, Params } from "./context.js";

const TILE = 64;
const TK = 16;

export interface TiledGemmSpec {
  /** Extra u32/i32/f32 fields of the parameter struct, after m, n, k (WGSL, "name: type," each). */
  fields: string;
  /** Storage buffer declarations, from binding 1 on. */
  bindings: string;
  /** fn loadA(z: u32, r: u32, k: u32) -> f32, called with r < m and k < K. */
  loadA: string;
  /** fn loadB(z: u32, k: u32, c: u32) -> f32, called with k < K and c < n. */
  loadB: string;
  /** fn store(z: u32, r: u32, c: u32, v: f32), called with r < m and c < n. */
  store: string;
  /** Whether consecutive k of op(A) (resp. consecutive columns of op(B)) are adjacent in memory. */
  aAlongK: boolean;
  bAlongN: boolean;
}

/** The WGSL module of a tiled GEMM with the given loads and epilogue. */
export function tiledGemmShader(s: TiledGemmSpec): string {
  // Staging order: the fastest-varying index of a load follows memory, so neighbouring threads read
  // neighbouring addresses.
  const aIndex = s.aAlongK ? "let ar = e / 16u; let ak = e % 16u;" : "let ar = e % 64u; let ak = e / 64u;";
  const bIndex = s.bAlongN ? "let bk = e / 64u; let bc = e % 64u;" : "let bk = e % 16u; let bc = e / 16u;";
  return /* wgsl */ `
struct P { m: u32, n: u32, k: u32, ${s.fields} };
@group(0) @binding(0) var<uniform> p: P;
${s.bindings}
var<workgroup> As: array<f32, ${TK * TILE}>;
var<workgroup> Bs: array<f32, ${TK * TILE}>;
${s.loadA}
${s.loadB}
${s.store}
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wid.y * ${TILE}u;
  let col0 = wid.x * ${TILE}u;
  let z = wid.z;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < p.k; k0 += ${TK}u) {
    for (var i = 0u; i < 4u; i++) {
      let e = li + i * 256u;
      ${aIndex}
      var av = 0.0;
      if (row0 + ar < p.m && k0 + ak < p.k) { av = loadA(z, row0 + ar, k0 + ak); }
      As[ak * ${TILE}u + ar] = av;
      ${bIndex}
      var bv = 0.0;
      if (k0 + bk < p.k && col0 + bc < p.n) { bv = loadB(z, k0 + bk, col0 + bc); }
      Bs[bk * ${TILE}u + bc] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${TK}u; kk++) {
      var a: array<f32, 4>;
      var b: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = As[kk * ${TILE}u + lid.y + 16u * i];
        b[i] = Bs[kk * ${TILE}u + lid.x + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] = fma(a[i], b[j], acc[i][j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      let r = row0 + lid.y + 16u * i;
      let c = col0 + lid.x + 16u * j;
      if (r < p.m && c < p.n) { store(z, r, c, acc[i][j]); }
    }
  }
}`;
}

/** Workgroups of a tiled GEMM over C (m, n), for `batch` independent products. */
export function tiledGemmGrid(m: number, n: number, batch = 1): [number, number, number] {
  return [Math.ceil(n / TILE), Math.ceil(m / TILE), batch];
}

function gemmShader(transA: boolean, transB: boolean, beta: 0 | 1): string {
  return tiledGemmShader({
    fields: "",
    bindings: `
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;`,
    // A is (m, k) row-major, or (k, m) when transposed; B is (k, n), or (n, k) when transposed.
    loadA: `fn loadA(z: u32, r: u32, k: u32) -> f32 { return a[${transA ? "k * p.m + r" : "r * p.k + k"}]; }`,
    loadB: `fn loadB(z: u32, k: u32, col: u32) -> f32 { return b[${transB ? "col * p.k + k" : "k * p.n + col"}]; }`,
    store: `fn store(z: u32, r: u32, col: u32, v: f32) { ${beta === 1 ? "c[r * p.n + col] += v;" : "c[r * p.n + col] = v;"} }`,
    aAlongK: !transA,
    bAlongN: !transB,
  });
}

export function expectDeviceLength(what: string, a: DeviceArray, n: number): void {
  if (a.length !== n) throw new RangeError(`Expected ${what} of length ${n} but received length ${a.length}`);
}

/** C (m, n) = op(A) op(B) + beta C, row-major, as Backend.gemm. */
export function gemm(
  ctx: GpuContext,
  c: DeviceArray,
  a: DeviceArray,
  b: DeviceArray,
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
  beta: 0 | 1,
): void {
  expectDeviceLength("C", c, m * n);
  expectDeviceLength("A", a, m * k);
  expectDeviceLength("B", b, k * n);
  if (m === 0 || n === 0) return;
  const params = new Params().u32(m).u32(n).u32(k);
  ctx.dispatch(gemmShader(transA, transB, beta), params, [c, a, b], tiledGemmGrid(m, n));
}
