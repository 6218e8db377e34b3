// Fuzzing every entry point of the raw native addon (no TypeScript validation in front): random geometries
// whose buffers have exactly the lengths they claim (so the kernels really run on odd, inconsistent shapes:
// outH larger than the input allows, padding wider than the kernel, zero-sized dimensions), then mutations of
// one or two arguments (wrong lengths, other typed arrays, plain arrays, null, negative/huge/NaN/Infinity/
// fractional sizes, missing or extra arguments, broken geometry objects). Every call must return or throw a
// TypeError/RangeError whose message starts "Expected", and must not write outside its buffers: each buffer
// is a view with canary values on both sides, checked after every call.
// The cases run in a child process (VGG_FUZZ_NATIVE_CHILD=1) so a crash shows up as a signal, not as a
// vanished test runner. VGG_FUZZ_NATIVE_RUNS sets the runs per entry point (scripts/leak-check.sh uses a
// few under valgrind to catch out-of-bounds reads, which canaries cannot see).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { loadNativeAddon } from "../src/backend/native.js";

const SEED = 20250611;
/** A 3x2 RGB PNG (pngjs, filter type 4), for decodePng. */
const TINY_PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAMAAAACCAIAAAASFvFNAAAAHUlEQVR4AWNhUPX6d3Nr04y1LF+udtfN2lIlyQ8AYTQJjd58pFEAAAAASUVORK5CYII=",
  "base64",
);
const GUARD = 8; // canary elements on each side of every buffer
const F32_CANARY = -1234.5625; // exact in float32
const I32_CANARY = 0x5a5a5a5a;

// ---- argument slots: what a valid call passes, before materialisation ----
type Slot =
  | { kind: "f32"; len: number; nullable?: boolean; zeros?: number }
  | { kind: "i32"; len: number; lo: number; hi: number }
  | { kind: "value"; value: unknown }
  | { kind: "packed"; n: number; k: number }
  | { kind: "geom"; fields: Record<string, number> };

interface Case {
  entry: string;
  slots: Slot[];
}

/** Conv and pool entry points run under a random algorithm choice and thread count. */
const kernelSetting = fc.record({
  algorithm: fc.constantFrom("auto" as const, "direct" as const, "winograd" as const, "winograd4" as const),
  threads: fc.integer({ min: 1, max: 3 }),
});

const f32 = (len: number, nullable = false): Slot => ({ kind: "f32", len, nullable });
/** A float buffer whose elements are also zero with probability `zeros` (0: as f32; a ReLU/dropout output: the sparse GEMM's A). */
const sparseF32 = (len: number, zeros: number): Slot => ({ kind: "f32", len, zeros });
const value = (v: unknown): Slot => ({ kind: "value", value: v });

const small = (max: number) => fc.integer({ min: 0, max });

// Conv geometry: outH/outW follow the formula or are arbitrary (inconsistent with h, kh, stride, pad).
const convGeom = fc
  .record({
    n: small(3),
    cIn: small(4),
    h: small(7),
    w: small(7),
    cOut: small(4),
    kh: small(4),
    kw: small(4),
    strideH: fc.integer({ min: 1, max: 3 }),
    strideW: fc.integer({ min: 1, max: 3 }),
    padH: small(3),
    padW: small(3),
    consistent: fc.boolean(),
    outH: small(9),
    outW: small(9),
  })
  .map(({ consistent, ...g }) => {
    if (consistent) {
      g.outH = Math.max(0, Math.floor((g.h + 2 * g.padH - g.kh) / g.strideH) + 1);
      g.outW = Math.max(0, Math.floor((g.w + 2 * g.padW - g.kw) / g.strideW) + 1);
    }
    return g;
  });

// For the bf16 convolutions: channel counts that reach their implicit GEMMs (cIn * kh * kw >= 32) and whole
// 16-row tiles of output channels (the direct AMX forward), mostly consistent 3 x 3 geometries.
const bf16ConvGeom = fc
  .record({
    g: convGeom,
    cIn: fc.integer({ min: 1, max: 40 }),
    cOut: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.constantFrom(16, 32, 48)),
    vgg: fc.boolean(),
    h: fc.integer({ min: 0, max: 13 }),
    w: fc.integer({ min: 0, max: 13 }),
  })
  .map(({ g, cIn, cOut, vgg, h, w }) => {
    const out = { ...g, cIn, cOut };
    // Planes up to 13 x 13 reach the kernels' 64-pixel minimum.
    if (vgg)
      Object.assign(out, { h, w, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1, outH: h, outW: w });
    return out;
  });

// Same for pooling (n, c instead of n, cIn/cOut); the 2x2 stride-2 VGG window is common, to hit its SIMD path.
const poolGeom = fc
  .record({
    n: small(3),
    c: small(4),
    h: small(20),
    w: small(20),
    vgg: fc.boolean(),
    kh: small(4),
    kw: small(4),
    strideH: fc.integer({ min: 1, max: 3 }),
    strideW: fc.integer({ min: 1, max: 3 }),
    padH: small(2),
    padW: small(2),
    consistent: fc.boolean(),
    outH: small(12),
    outW: small(12),
  })
  .map(({ consistent, vgg, ...g }) => {
    if (vgg) Object.assign(g, { kh: 2, kw: 2, strideH: 2, strideW: 2, padH: 0, padW: 0 });
    if (consistent) {
      g.outH = Math.max(0, Math.floor((g.h + 2 * g.padH - g.kh) / g.strideH) + 1);
      g.outW = Math.max(0, Math.floor((g.w + 2 * g.padW - g.kw) / g.strideW) + 1);
    }
    return g;
  });

function convLengths(g: Record<string, number>) {
  return {
    x: g.n * g.cIn * g.h * g.w,
    w: g.cOut * g.cIn * g.kh * g.kw,
    y: g.n * g.cOut * g.outH * g.outW,
  };
}

function gemmCase(
  m: fc.Arbitrary<number>,
  n: fc.Arbitrary<number>,
  k: fc.Arbitrary<number>,
  zeros: number,
  entry = "gemm",
) {
  return fc
    .record({ m, n, k, ta: fc.boolean(), tb: fc.boolean(), beta: fc.constantFrom(0, 1) })
    .map(({ m, n, k, ta, tb, beta }) => ({
      entry,
      slots: [
        f32(m * n),
        sparseF32(m * k, zeros),
        f32(k * n),
        value(m),
        value(n),
        value(k),
        value(ta),
        value(tb),
        value(beta),
      ],
    }));
}

// k up to 800 crosses the GEMM's k blocks; the packed B comes from gemmPackB (see materialise).
function packedCase(
  m: fc.Arbitrary<number>,
  n: fc.Arbitrary<number>,
  k: fc.Arbitrary<number>,
  zeros: number,
) {
  return fc.record({ m, n, k, beta: fc.constantFrom(0, 1) }).map(({ m, n, k, beta }) => ({
    entry: "gemmPackedB",
    slots: [
      f32(m * n),
      sparseF32(m * k, zeros),
      { kind: "packed", n, k } as Slot,
      value(m),
      value(n),
      value(k),
      value(beta),
    ],
  }));
}

type ConvGeom = fc.Arbitrary<Record<string, number>>;

// The four convolution passes' valid calls, float32 and bf16 alike (the same arguments), on `geom`.
const convForwardCase = (entry: string, geom: ConvGeom) =>
  fc.tuple(geom, fc.boolean(), fc.boolean()).map(([g, bias, relu]) => {
    const l = convLengths(g);
    return {
      entry,
      slots: [
        f32(l.y),
        f32(l.x),
        f32(l.w),
        bias ? f32(g.cOut) : value(null),
        { kind: "geom", fields: g } as Slot,
        value(relu),
      ],
    };
  });

const convPoolCase = (entry: string, geom: ConvGeom) =>
  fc.tuple(geom, fc.boolean()).map(([g, bias]) => {
    const l = convLengths(g);
    const pooled = g.n * g.cOut * Math.floor(g.outH / 2) * Math.floor(g.outW / 2);
    return {
      entry,
      slots: [
        f32(pooled),
        { kind: "i32", len: pooled, lo: 0, hi: 0 } as Slot,
        f32(l.x),
        f32(l.w),
        bias ? f32(g.cOut) : value(null),
        { kind: "geom", fields: g } as Slot,
      ],
    };
  });

// The pooled weight gradient: argmax values from the forward, or anything near the plane (out of range
// ones must be ignored).
const convPoolWeightGradCase = (entry: string, geom: ConvGeom) =>
  fc.tuple(geom, fc.boolean(), fc.boolean()).map(([g, db, mask]) => {
    const l = convLengths(g);
    const pooled = g.n * g.cOut * Math.floor(g.outH / 2) * Math.floor(g.outW / 2);
    return {
      entry,
      slots: [
        f32(l.w),
        db ? f32(g.cOut) : value(null),
        f32(pooled),
        { kind: "i32", len: pooled, lo: -2, hi: g.outH * g.outW + 2 } as Slot,
        mask ? f32(pooled) : value(null),
        f32(l.x),
        { kind: "geom", fields: g } as Slot,
      ],
    };
  });

const convInputGradCase = (entry: string, geom: ConvGeom) =>
  fc.tuple(geom, fc.boolean()).map(([g, mask]) => {
    const l = convLengths(g);
    return {
      entry,
      slots: [
        f32(l.x),
        f32(l.y),
        f32(l.w),
        { kind: "geom", fields: g } as Slot,
        mask ? f32(l.x) : value(null),
      ],
    };
  });

const convWeightGradCase = (entry: string, geom: ConvGeom) =>
  fc.tuple(geom, fc.boolean()).map(([g, db]) => {
    const l = convLengths(g);
    return {
      entry,
      slots: [
        f32(l.w),
        db ? f32(g.cOut) : value(null),
        f32(l.y),
        f32(l.x),
        { kind: "geom", fields: g } as Slot,
      ],
    };
  });

/** Valid calls of every entry point, as slots. */
const validCases: Record<string, fc.Arbitrary<Case>> = {
  gemmPackB: fc
    .record({ n: small(40), k: small(40), tb: fc.boolean() })
    .map(({ n, k, tb }) => ({ entry: "gemmPackB", slots: [f32(k * n), value(n), value(k), value(tb)] })),
  // k up to 800 crosses the GEMM's k blocks; the packed B comes from gemmPackB (see materialise).
  gemmPackedB: fc.oneof(
    {
      weight: 39,
      arbitrary: packedCase(small(20), small(40), fc.oneof(small(40), fc.integer({ min: 380, max: 800 })), 0),
    },
    {
      weight: 1,
      arbitrary: packedCase(
        fc.integer({ min: 5, max: 24 }),
        fc.integer({ min: 512, max: 600 }),
        fc.integer({ min: 200, max: 420 }),
        0.8,
      ),
    },
  ),
  // Mostly small shapes; one case in 40 is wide and deep enough, with an A 80% zeros, for the sparse path.
  gemm: fc.oneof(
    { weight: 39, arbitrary: gemmCase(small(20), small(20), small(20), 0) },
    {
      weight: 1,
      arbitrary: gemmCase(
        fc.integer({ min: 5, max: 24 }),
        fc.integer({ min: 512, max: 700 }),
        fc.integer({ min: 200, max: 420 }),
        0.8,
      ),
    },
  ),
  // bf16 (native/bf16.h): sizes across the 12 x 32 micro-tile and the 256-deep k blocks.
  gemmBf16: gemmCase(
    small(40),
    small(70),
    fc.oneof(small(20), fc.integer({ min: 250, max: 520 })),
    0,
    "gemmBf16",
  ),
  // One case in 40 is long enough (> 2^16) for the threaded rounding.
  roundBf16: fc
    .oneof(
      { weight: 39, arbitrary: small(40) },
      { weight: 1, arbitrary: fc.integer({ min: 65_537, max: 66_000 }) },
    )
    .map((n) => ({
      entry: "roundBf16",
      slots: [f32(n), f32(n)],
    })),
  bf16Path: fc.constant({ entry: "bf16Path", slots: [] }),
  conv2dForward: convForwardCase("conv2dForward", convGeom),
  conv2dReluMaxPool2dForward: convPoolCase("conv2dReluMaxPool2dForward", convGeom),
  conv2dBackwardInput: convInputGradCase("conv2dBackwardInput", convGeom),
  conv2dBackwardWeight: convWeightGradCase("conv2dBackwardWeight", convGeom),
  conv2dReluMaxPool2dBackwardWeight: convPoolWeightGradCase("conv2dReluMaxPool2dBackwardWeight", convGeom),
  conv2dForwardBf16: convForwardCase("conv2dForwardBf16", bf16ConvGeom),
  conv2dReluMaxPool2dForwardBf16: convPoolCase("conv2dReluMaxPool2dForwardBf16", bf16ConvGeom),
  conv2dBackwardInputBf16: convInputGradCase("conv2dBackwardInputBf16", bf16ConvGeom),
  conv2dBackwardWeightBf16: convWeightGradCase("conv2dBackwardWeightBf16", bf16ConvGeom),
  maxPool2dForward: poolGeom.map((g) => {
    const y = g.n * g.c * g.outH * g.outW;
    return {
      entry: "maxPool2dForward",
      slots: [
        f32(y),
        { kind: "i32", len: y, lo: 0, hi: 0 },
        f32(g.n * g.c * g.h * g.w),
        { kind: "geom", fields: g },
      ],
    };
  }),
  maxPool2dBackward: fc.tuple(poolGeom, fc.boolean()).map(([g, relu]) => {
    const y = g.n * g.c * g.outH * g.outW;
    return {
      entry: "maxPool2dBackward",
      slots: [
        f32(g.n * g.c * g.h * g.w),
        f32(y),
        // Indices in and out of range: the kernel must ignore the ones outside the input plane.
        { kind: "i32", len: y, lo: -3, hi: g.h * g.w + 3 },
        { kind: "geom", fields: g },
        relu ? f32(y) : value(null),
      ],
    };
  }),
  relu: small(40).map((n) => ({ entry: "relu", slots: [f32(n), f32(n)] })),
  reluBackward: small(40).map((n) => ({ entry: "reluBackward", slots: [f32(n), f32(n), f32(n)] })),
  mul: small(40).map((n) => ({ entry: "mul", slots: [f32(n), f32(n), f32(n)] })),
  dropoutMask: fc.tuple(small(40), fc.constantFrom(0, 0.3, 0.5, 1)).map(([n, p]) => ({
    entry: "dropoutMask",
    slots: [f32(n), value(p), value(p === 1 ? 0 : 1 / (1 - p)), value(Uint32Array.of(1, 2, 3, 4))],
  })),
  addInPlace: small(40).map((n) => ({ entry: "addInPlace", slots: [f32(n), f32(n)] })),
  addRowBias: fc.tuple(small(8), small(8)).map(([rows, cols]) => ({
    entry: "addRowBias",
    slots: [f32(rows * cols), f32(cols), value(rows), value(cols)],
  })),
  softmaxCrossEntropy: fc.tuple(small(6), small(6)).map(([n, c]) => ({
    entry: "softmaxCrossEntropy",
    // Targets sometimes out of [0, c): a RangeError, never a read past the row.
    slots: [f32(n * c), f32(n * c), { kind: "i32", len: n, lo: -1, hi: c }, value(n), value(c)],
  })),
  batchNormForwardTrain: fc
    .tuple(small(4), small(4), small(9), fc.constantFrom(1e-5, 0, -1, Number.NaN), fc.boolean())
    .map(([n, c, hw, eps, relu]) => ({
      entry: "batchNormForwardTrain",
      slots: [
        f32(n * c * hw),
        f32(c),
        f32(c),
        f32(n * c * hw),
        f32(c),
        f32(c),
        value(n),
        value(c),
        value(hw),
        value(eps),
        value(relu),
      ],
    })),
  channelAffine: fc.tuple(small(4), small(4), small(9), fc.boolean()).map(([n, c, hw, relu]) => ({
    entry: "channelAffine",
    slots: [f32(n * c * hw), f32(n * c * hw), f32(c), f32(c), value(n), value(c), value(hw), value(relu)],
  })),
  batchNormBackward: fc.tuple(small(4), small(4), small(9)).map(([n, c, hw]) => ({
    entry: "batchNormBackward",
    slots: [
      f32(n * c * hw),
      f32(c),
      f32(c),
      f32(n * c * hw),
      f32(n * c * hw),
      f32(c),
      f32(c),
      f32(c),
      value(n),
      value(c),
      value(hw),
    ],
  })),
  sgdStep: fc
    .record({
      len: small(30),
      momentum: fc.constantFrom(0, 0.9),
      buf: fc.boolean(),
      nesterov: fc.boolean(),
      firstStep: fc.boolean(),
      weightDecay: fc.constantFrom(0, 1e-4),
    })
    .map(({ len, momentum, buf, nesterov, firstStep, weightDecay }) => ({
      entry: "sgdStep",
      slots: [
        f32(len),
        f32(len),
        buf ? f32(len) : value(null),
        value({ lr: 0.1, momentum, dampening: 0, weightDecay, nesterov, firstStep }),
      ],
    })),
  setConvAlgorithm: fc
    .constantFrom("direct", "winograd", "winograd4")
    .map((a) => ({ entry: "setConvAlgorithm", slots: [value(a)] })),
  convKernel: fc.tuple(convGeom, fc.boolean()).map(([g, backward]) => ({
    entry: "convKernel",
    slots: [{ kind: "geom", fields: g }, value(backward)],
  })),
  convWeightKernel: convGeom.map((g) => ({
    entry: "convWeightKernel",
    slots: [{ kind: "geom", fields: g }],
  })),
  setNumThreads: fc.integer({ min: 1, max: 3 }).map((n) => ({ entry: "setNumThreads", slots: [value(n)] })),
  numThreads: fc.constant({ entry: "numThreads", slots: [] }),
  setIdleSpin: fc.constantFrom(0, 50, 2000).map((us) => ({ entry: "setIdleSpin", slots: [value(us)] })),
  // A mark left set only makes the later kernels of this child run serially.
  markCoresBusy: fc.boolean().map((busy) => ({ entry: "markCoresBusy", slots: [value(busy)] })),
  info: fc.constant({ entry: "info", slots: [] }),
  // A 3x2 RGB PNG with up to three bytes changed (a bad CRC, size or stream; some stay valid), or noise.
  decodePng: fc
    .tuple(
      fc.oneof(
        fc.array(fc.tuple(fc.nat(TINY_PNG.length - 1), fc.nat(255)), { maxLength: 3 }).map((edits) => {
          const bytes = Uint8Array.from(TINY_PNG);
          for (const [at, v] of edits) bytes[at] = v;
          return bytes;
        }),
        fc.uint8Array({ maxLength: 64 }),
      ),
      fc.constantFrom(0, 6, 1e6),
      fc.boolean(),
    )
    .map(([bytes, maxPixels, grey]) => ({
      entry: "decodePng",
      slots: [value(bytes), value(maxPixels), value(grey)],
    })),
};

// ---- mutations ----
const hostileNumbers: unknown[] = [
  -1,
  -0,
  0.5,
  1.5,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  2 ** 31,
  2 ** 31 - 1,
  2 ** 32 + 1,
  2 ** 53,
  1e308,
  -(2 ** 31),
];
const hostileValues: unknown[] = [
  ...hostileNumbers,
  "3",
  "",
  null,
  undefined,
  true,
  {},
  [],
  [1, 2, 3],
  3n,
  Symbol("s"),
  () => 1,
  new Float64Array(4),
  new Uint8Array(4),
  new Int32Array(4),
  new Float32Array(4),
  new ArrayBuffer(16),
  new DataView(new ArrayBuffer(16)),
];

type Mutation =
  | { kind: "replace"; at: number; value: unknown }
  | { kind: "length"; at: number; delta: number }
  | { kind: "retype"; at: number; to: "f64" | "i32" | "f32" | "u8" | "array" }
  | { kind: "field"; at: number; field: number; value: unknown; remove: boolean }
  | { kind: "argc"; count: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant("replace" as const),
    at: small(11),
    value: fc.constantFrom(...hostileValues),
  }),
  fc.record({
    kind: fc.constant("length" as const),
    at: small(11),
    delta: fc.constantFrom(-2, -1, 1, 2, 1000),
  }),
  fc.record({
    kind: fc.constant("retype" as const),
    at: small(11),
    to: fc.constantFrom("f64" as const, "i32" as const, "f32" as const, "u8" as const, "array" as const),
  }),
  fc.record({
    kind: fc.constant("field" as const),
    at: small(11),
    field: small(12),
    value: fc.constantFrom(...hostileValues),
    remove: fc.boolean(),
  }),
  fc.record({ kind: fc.constant("argc" as const), count: small(12) }),
);

// ---- materialisation with canaries ----
interface Guarded {
  full: Float32Array | Int32Array;
  canary: number;
}

function makeF32(len: number, rand: () => number, guards: Guarded[], zeros = 0): Float32Array {
  const full = new Float32Array(len + 2 * GUARD).fill(F32_CANARY);
  for (let i = 0; i < len; i++) {
    if (zeros > 0 && rand() < zeros) {
      full[GUARD + i] = 0;
      continue;
    }
    const r = rand();
    // Mostly ordinary values, some NaN, infinities and zeros.
    full[GUARD + i] = r < 0.03 ? Number.NaN : r < 0.05 ? Number.POSITIVE_INFINITY : r < 0.1 ? 0 : 4 * r - 2;
  }
  guards.push({ full, canary: F32_CANARY });
  return full.subarray(GUARD, GUARD + len);
}

function makeI32(len: number, lo: number, hi: number, rand: () => number, guards: Guarded[]): Int32Array {
  const full = new Int32Array(len + 2 * GUARD).fill(I32_CANARY);
  for (let i = 0; i < len; i++) full[GUARD + i] = lo + Math.floor(rand() * (hi - lo + 1));
  guards.push({ full, canary: I32_CANARY });
  return full.subarray(GUARD, GUARD + len);
}

function retype(len: number, to: string): unknown {
  switch (to) {
    case "f64":
      return new Float64Array(len);
    case "i32":
      return new Int32Array(len);
    case "u8":
      return new Uint8Array(len * 4);
    case "array":
      return new Array(len).fill(0);
    default:
      return new Float32Array(len);
  }
}

/** Packs a random B (k, n) for a "packed" slot: set by runChild from the addon under test. */
let packB: (b: Float32Array, n: number, k: number, transB: boolean) => Float32Array = () => {
  throw new Error("packB is set by runChild");
};

function materialise(c: Case, mutations: Mutation[], seed: number): { args: unknown[]; guards: Guarded[] } {
  let s = seed >>> 0 || 1;
  const rand = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const slots = c.slots.map((slot) =>
    slot.kind === "geom" ? { ...slot, fields: { ...slot.fields } } : { ...slot },
  );
  const replaced = new Map<number, unknown>();
  let argc = slots.length;
  for (const m of mutations) {
    if (m.kind === "argc") {
      argc = m.count;
      continue;
    }
    if (slots.length === 0) continue;
    const at = m.at % slots.length;
    const slot = slots[at];
    if (m.kind === "replace") replaced.set(at, m.value);
    else if (m.kind === "length" && (slot.kind === "f32" || slot.kind === "i32"))
      slot.len = Math.max(0, slot.len + m.delta);
    else if (m.kind === "retype" && (slot.kind === "f32" || slot.kind === "i32"))
      replaced.set(at, retype(slot.len, m.to));
    else if (m.kind === "field" && slot.kind === "geom") {
      const keys = Object.keys(slot.fields);
      const key = keys[m.field % keys.length];
      if (m.remove) delete slot.fields[key];
      else (slot.fields as Record<string, unknown>)[key] = m.value;
    }
  }
  const guards: Guarded[] = [];
  const args: unknown[] = [];
  for (let i = 0; i < argc; i++) {
    if (replaced.has(i)) {
      args.push(replaced.get(i));
      continue;
    }
    const slot = slots[i];
    if (slot === undefined) args.push(i % 2 === 0 ? undefined : new Float32Array(1));
    else if (slot.kind === "f32") args.push(makeF32(slot.len, rand, guards, slot.zeros ?? 0));
    else if (slot.kind === "i32") args.push(makeI32(slot.len, slot.lo, slot.hi, rand, guards));
    else if (slot.kind === "geom") args.push(slot.fields);
    else if (slot.kind === "packed")
      args.push(
        packB(
          Float32Array.from({ length: slot.n * slot.k }, () => rand() - 0.5),
          slot.n,
          slot.k,
          rand() < 0.5,
        ),
      );
    else args.push(slot.value);
  }
  return { args, guards };
}

function describeArgs(args: unknown[]): string {
  return args
    .map((a) =>
      ArrayBuffer.isView(a)
        ? `${a.constructor.name}(${(a as Float32Array).length})`
        : typeof a === "symbol" || typeof a === "function"
          ? String(a)
          : JSON.stringify(a, (_, v) =>
              typeof v === "bigint" ? `${v}n` : typeof v === "symbol" ? String(v) : v,
            ),
    )
    .join(", ");
}

/** Runs the fuzzer in this process and returns the number of calls per entry point. */
function runChild(runs: number): Record<string, { ok: number; threw: number }> {
  const addon = loadNativeAddon();
  if (addon instanceof Error) throw addon;
  const fns = addon as unknown as Record<string, (...args: unknown[]) => unknown>;
  packB = (b, n, k, transB) => addon.gemmPackB(b, n, k, transB);
  assert.deepEqual(Object.keys(validCases).sort(), Object.keys(addon).sort(), "every addon export is fuzzed");
  const counts: Record<string, { ok: number; threw: number }> = {};
  let entryIndex = 0;
  for (const [entry, arb] of Object.entries(validCases)) {
    const count = { ok: 0, threw: 0 };
    counts[entry] = count;
    const property = fc.property(
      arb,
      fc.array(mutationArb, { maxLength: 2 }),
      fc.nat(),
      kernelSetting,
      (c, mutations, seed, setting) => {
        const { args, guards } = materialise(c, mutations, seed);
        addon.setConvAlgorithm(setting.algorithm);
        addon.setNumThreads(setting.threads);
        try {
          fns[entry](...args);
          count.ok++;
        } catch (e) {
          count.threw++;
          assert.ok(
            e instanceof TypeError || e instanceof RangeError,
            `${entry}(${describeArgs(args)}) threw ${String(e)}`,
          );
          assert.match(e.message, /^Expected /, `${entry}(${describeArgs(args)})`);
        }
        for (const g of guards) {
          const end = g.full.length - GUARD;
          for (let i = 0; i < GUARD; i++)
            if (!Object.is(g.full[i], g.canary) || !Object.is(g.full[end + i], g.canary))
              assert.fail(`${entry}(${describeArgs(args)}) wrote outside a buffer of length ${end - GUARD}`);
        }
      },
    );
    fc.assert(property, { seed: SEED + entryIndex++, numRuns: runs });
  }
  return counts;
}

if (process.env.VGG_FUZZ_NATIVE_CHILD === "1") {
  const counts = runChild(Number(process.env.VGG_FUZZ_NATIVE_RUNS ?? "4000"));
  const addon = loadNativeAddon();
  const sparse = addon instanceof Error ? 0 : addon.info().sparseGemmCalls;
  process.stdout.write(`${JSON.stringify({ counts, sparseGemmCalls: sparse })}\n`);
} else {
  test("every native entry point throws a JS error on bad arguments and never crashes or writes out of bounds", (t) => {
    if (loadNativeAddon() instanceof Error) {
      t.skip("the native addon is not built");
      return;
    }
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const started = Date.now();
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...env, VGG_FUZZ_NATIVE_CHILD: "1", VGG_KERNEL_CACHE: "off", VGG_CONV_ALGO: "direct" },
      encoding: "utf8",
      // A hang guard only: 100,000 calls take about a minute on a quiet 2-core machine, several on a
      // loaded one, so the bound is far from any speed and the message says which it was.
      timeout: 1_200_000,
    });
    const hung =
      child.signal === "SIGTERM" && Date.now() - started >= 1_200_000 ? " (the 20-minute hang guard)" : "";
    assert.equal(
      child.signal,
      null,
      `the fuzz child died of ${child.signal}${hung}:\n${child.stderr.slice(-4000)}`,
    );
    assert.equal(child.status, 0, `the fuzz child failed:\n${child.stderr.slice(-4000)}`);
    const { counts, sparseGemmCalls } = JSON.parse(child.stdout.trim().split("\n").at(-1) ?? "{}") as {
      counts: Record<string, { ok: number; threw: number }>;
      sparseGemmCalls: number;
    };
    const total = Object.values(counts).reduce((a, c) => a + c.ok + c.threw, 0);
    t.diagnostic(`native entry points: ${total} calls in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (const [entry, c] of Object.entries(counts))
      t.diagnostic(`  ${entry}: ${c.ok + c.threw} calls, ${c.ok} returned, ${c.threw} threw a JS error`);
    assert.equal(Object.keys(counts).length, Object.keys(validCases).length);
    // The wide cases with a mostly-zero A reached the sparse GEMM (gemm and gemmPackedB).
    t.diagnostic(`  sparse-path GEMMs: ${sparseGemmCalls}`);
    assert.ok(sparseGemmCalls > 0, "no fuzz case reached the sparse GEMM");
    // Both outcomes occur for every entry point that takes arguments: the kernels really ran.
    for (const [entry, c] of Object.entries(counts)) {
      assert.ok(c.ok > 0, `${entry} never returned`);
      if (!["numThreads", "info", "bf16Path"].includes(entry)) assert.ok(c.threw > 0, `${entry} never threw`);
    }
  });
}
