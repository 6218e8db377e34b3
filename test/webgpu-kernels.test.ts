// The WebGPU kernels against the reference backend on random shapes (odd sizes, batch 1, channels not a
// multiple of the workgroup size, padding 0/1/2, stride 1/2): forward and every gradient. On SwiftShader
// (a CPU Vulkan) where the machine has no GPU; the shapes are small because that is slow.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { Conv2dGeometry, Pool2dGeometry, SgdOptions } from "../src/backend/backend.js";
import { ReferenceBackend } from "../src/backend/reference.js";
import { batchNormBackward, batchNormForwardTrain, channelAffine } from "../src/backend/webgpu/batchnorm.js";
import {
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dForward,
  weightGradientSplits,
} from "../src/backend/webgpu/conv2d.js";
import { gemm } from "../src/backend/webgpu/gemm.js";
import { softmaxCrossEntropy } from "../src/backend/webgpu/loss.js";
import { maxPool2dBackward, maxPool2dForward } from "../src/backend/webgpu/pool.js";
import { sgdStep } from "../src/backend/webgpu/sgd.js";
import { convGeometry } from "./helpers.js";
import { close, openGpu, rng, stale, up } from "./webgpu-setup.js";

const { ctx: gpu, skip } = await openGpu();
after(() => gpu?.destroy());
const opts = { skip, timeout: 300_000 };
const ref = new ReferenceBackend();
const rand = rng(2024);
function randn(len: number): Float32Array {
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) a[i] = rand() * 2 - 1;
  return a;
}

test("gemm matches the reference for every transpose and beta, across tile edges", opts, async () => {
  const ctx = gpu!;
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [3, 5, 7],
    [65, 63, 17],
    [17, 130, 33],
    [1, 70, 200],
    [40, 1, 15],
    [5, 6, 0],
  ];
  for (const [m, n, k] of shapes)
    for (const transA of [false, true])
      for (const transB of [false, true])
        for (const beta of [0, 1] as const) {
          const a = randn(m * k);
          const b = randn(k * n);
          const c0 = randn(m * n);
          const expected = c0.slice();
          ref.gemm(expected, a, b, m, n, k, transA, transB, beta);
          const c = up(ctx, c0);
          gemm(ctx, c, up(ctx, a), up(ctx, b), m, n, k, transA, transB, beta);
          close(
            await ctx.readFloat32(c),
            expected,
            `gemm ${m}x${n}x${k} tA=${transA} tB=${transB} beta=${beta}`,
          );
        }
});

const convCases: Conv2dGeometry[] = [
  convGeometry(1, 1, 7, 9, 3, 3, 1, 1),
  convGeometry(2, 3, 9, 7, 5, 3, 1, 1),
  convGeometry(3, 5, 11, 11, 7, 3, 2, 1),
  convGeometry(1, 9, 1, 1, 13, 1, 1, 0),
  convGeometry(2, 4, 1, 1, 6, 3, 1, 1),
  convGeometry(3, 6, 8, 10, 11, 5, 1, 2),
  convGeometry(2, 3, 13, 9, 8, 5, 2, 2),
  convGeometry(1, 20, 12, 12, 67, 3, 1, 0),
  convGeometry(2, 7, 10, 10, 9, 1, 2, 0),
  convGeometry(2, 17, 15, 15, 17, 3, 1, 1),
];

function label(g: Conv2dGeometry): string {
  return `n${g.n} ${g.cIn}->${g.cOut} ${g.h}x${g.w} k${g.kh} s${g.strideH} p${g.padH}`;
}

test(
  "conv2d forward (bias, ReLU) and both gradients (fused ReLU mask, bias) match the reference",
  opts,
  async () => {
    const ctx = gpu!;
    for (const g of convCases) {
      const xLen = g.n * g.cIn * g.h * g.w;
      const wLen = g.cOut * g.cIn * g.kh * g.kw;
      const yLen = g.n * g.cOut * g.outH * g.outW;
      const [x, w, bias, dy] = [randn(xLen), randn(wLen), randn(g.cOut), randn(yLen)];
      const [dx, dw, db, dyD] = [up(ctx, x), up(ctx, w), up(ctx, bias), up(ctx, dy)];
      for (const withBias of [true, false])
        for (const relu of [false, true]) {
          const expected = new Float32Array(yLen);
          ref.conv2dForward(expected, x, w, withBias ? bias : null, g, relu);
          const y = stale(ctx, yLen);
          conv2dForward(ctx, y, dx, dw, withBias ? db : null, g, relu);
          close(await ctx.readFloat32(y), expected, `forward ${label(g)} bias=${withBias} relu=${relu}`);
        }
      const mask = randn(xLen);
      for (const masked of [false, true]) {
        const expected = new Float32Array(xLen);
        ref.conv2dBackwardInput(expected, dy, w, g, masked ? mask : null);
        const gx = stale(ctx, xLen);
        conv2dBackwardInput(ctx, gx, dyD, dw, g, masked ? up(ctx, mask) : null);
        close(await ctx.readFloat32(gx), expected, `backward input ${label(g)} mask=${masked}`);
      }
      const [dwR, dbR] = [new Float32Array(wLen), new Float32Array(g.cOut)];
      ref.conv2dBackwardWeight(dwR, dbR, dy, x, g);
      for (const withBias of [true, false]) {
        const [gw, gb] = [stale(ctx, wLen), stale(ctx, g.cOut)];
        conv2dBackwardWeight(ctx, gw, withBias ? gb : null, dyD, dx, g);
        close(await ctx.readFloat32(gw), dwR, `backward weight ${label(g)}`);
        if (withBias) close(await ctx.readFloat32(gb), dbR, `backward bias ${label(g)}`);
      }
    }
  },
);

test("conv2d rejects buffers of the wrong length with the expected sizes", opts, () => {
  const ctx = gpu!;
  const g = convCases[1];
  const y = ctx.pool.acquire(3);
  assert.throws(
    () => conv2dForward(ctx, y, ctx.pool.acquire(1), ctx.pool.acquire(1), null, g, false),
    /Expected y of length 630 but received length 3/,
  );
});

function poolGeometry(
  n: number,
  c: number,
  h: number,
  w: number,
  k: number,
  stride: number,
  pad: number,
): Pool2dGeometry {
  const outH = Math.floor((h + 2 * pad - k) / stride) + 1;
  const outW = Math.floor((w + 2 * pad - k) / stride) + 1;
  return { n, c, h, w, kh: k, kw: k, strideH: stride, strideW: stride, padH: pad, padW: pad, outH, outW };
}

test(
  "max-pool forward (values, argmax, NaN) and backward (overlapping windows, fused ReLU) match the reference",
  opts,
  async () => {
    const ctx = gpu!;
    const cases = [
      poolGeometry(1, 1, 4, 4, 2, 2, 0),
      poolGeometry(2, 3, 7, 9, 2, 2, 0),
      poolGeometry(3, 5, 9, 8, 3, 1, 1),
      poolGeometry(2, 7, 11, 10, 3, 2, 1),
      poolGeometry(1, 17, 13, 13, 5, 2, 2),
    ];
    for (const g of cases) {
      const xLen = g.n * g.c * g.h * g.w;
      const yLen = g.n * g.c * g.outH * g.outW;
      const x = randn(xLen);
      x[Math.floor(xLen / 3)] = Number.NaN;
      const [yR, amR] = [new Float32Array(yLen), new Int32Array(yLen)];
      ref.maxPool2dForward(yR, amR, x, g);
      const [y, am] = [stale(ctx, yLen), stale(ctx, yLen, "i32")];
      maxPool2dForward(ctx, y, am, up(ctx, x), g);
      const what = `pool n${g.n} c${g.c} ${g.h}x${g.w} k${g.kh} s${g.strideH} p${g.padH}`;
      close(await ctx.readFloat32(y), yR, `${what} values`, 0);
      assert.deepEqual(await ctx.read(am), amR, `${what} argmax`);
      const dy = randn(yLen);
      for (const fused of [false, true]) {
        const expected = new Float32Array(xLen);
        ref.maxPool2dBackward(expected, dy, amR, g, fused ? yR : null);
        const dx = stale(ctx, xLen);
        maxPool2dBackward(ctx, dx, up(ctx, dy), am, g, fused ? y : null);
        close(await ctx.readFloat32(dx), expected, `${what} backward relu=${fused}`, 1e-6);
      }
    }
  },
);

test(
  "softmax cross-entropy: loss and gradient match the reference; a bad target gives NaN",
  opts,
  async () => {
    const ctx = gpu!;
    for (const [n, c] of [
      [1, 10],
      [3, 7],
      [37, 10],
      [300, 3],
    ]) {
      const logits = randn(n * c).map((v) => v * 8);
      const targets = Int32Array.from({ length: n }, () => Math.floor(rand() * c));
      const dR = new Float32Array(n * c);
      const lossR = ref.softmaxCrossEntropy(dR, logits, targets, n, c);
      const [d, loss] = [stale(ctx, n * c), stale(ctx, 1)];
      softmaxCrossEntropy(ctx, d, loss, up(ctx, logits), up(ctx, targets), n, c);
      close(await ctx.readFloat32(d), dR, `dlogits ${n}x${c}`);
      close(await ctx.readFloat32(loss), [lossR], `loss ${n}x${c}`);
    }
    const loss = stale(ctx, 1);
    softmaxCrossEntropy(ctx, stale(ctx, 4), loss, up(ctx, randn(4)), up(ctx, Int32Array.of(0, 2)), 2, 2);
    assert.ok(Number.isNaN((await ctx.readFloat32(loss))[0]));
  },
);

test(
  "batch norm training forward (ReLU), channel affine (in place) and backward match the reference",
  opts,
  async () => {
    const ctx = gpu!;
    for (const [n, c, hw] of [
      [1, 3, 5],
      [3, 17, 300],
      [2, 5, 1],
      [4, 2, 77],
    ]) {
      const len = n * c * hw;
      const x = randn(len).map((v) => v * 3 + 1);
      const [gamma, beta, dy] = [randn(c), randn(c), randn(len)];
      for (const relu of [false, true]) {
        const [yR, mR, sR] = [new Float32Array(len), new Float32Array(c), new Float32Array(c)];
        ref.batchNormForwardTrain(yR, mR, sR, x, gamma, beta, n, c, hw, 1e-5, relu);
        const [y, m, s] = [stale(ctx, len), stale(ctx, c), stale(ctx, c)];
        batchNormForwardTrain(ctx, y, m, s, up(ctx, x), up(ctx, gamma), up(ctx, beta), n, c, hw, 1e-5, relu);
        const what = `bn ${n}x${c}x${hw} relu=${relu}`;
        close(await ctx.readFloat32(y), yR, `${what} y`);
        close(await ctx.readFloat32(m), mR, `${what} mean`);
        close(await ctx.readFloat32(s), sR, `${what} invStd`);
        if (relu) continue;
        const [dxR, dgR, dbR] = [new Float32Array(len), new Float32Array(c), new Float32Array(c)];
        ref.batchNormBackward(dxR, dgR, dbR, dy, x, gamma, mR, sR, n, c, hw);
        const [dx, dg, db] = [stale(ctx, len), stale(ctx, c), stale(ctx, c)];
        batchNormBackward(ctx, dx, dg, db, up(ctx, dy), up(ctx, x), up(ctx, gamma), m, s, n, c, hw);
        close(await ctx.readFloat32(dx), dxR, `${what} dx`);
        close(await ctx.readFloat32(dg), dgR, `${what} dgamma`);
        close(await ctx.readFloat32(db), dbR, `${what} dbeta`);
      }
      for (const relu of [false, true]) {
        const yR = new Float32Array(len);
        ref.channelAffine(yR, x, gamma, beta, n, c, hw, relu);
        const y = up(ctx, x);
        channelAffine(ctx, y, y, up(ctx, gamma), up(ctx, beta), n, c, hw, relu);
        close(await ctx.readFloat32(y), yR, `affine ${n}x${c}x${hw} relu=${relu}`);
      }
    }
  },
);

test(
  "sgd step matches the reference (plain, momentum, dampening, Nesterov, weight decay, first step)",
  opts,
  async () => {
    const ctx = gpu!;
    const base: SgdOptions = {
      lr: 0.05,
      momentum: 0,
      dampening: 0,
      weightDecay: 0,
      nesterov: false,
      firstStep: false,
    };
    const variants: SgdOptions[] = [
      base,
      { ...base, weightDecay: 5e-4 },
      { ...base, momentum: 0.9, firstStep: true },
      { ...base, momentum: 0.9, dampening: 0.1, weightDecay: 1e-3 },
      { ...base, momentum: 0.9, nesterov: true, weightDecay: 1e-3 },
    ];
    for (const o of variants) {
      const len = 1000 + 37;
      const [param, grad, buf] = [randn(len), randn(len), randn(len)];
      const [pR, bR] = [param.slice(), buf.slice()];
      ref.sgdStep(pR, grad, o.momentum ? bR : null, o);
      const [p, b] = [up(ctx, param), up(ctx, buf)];
      sgdStep(ctx, p, up(ctx, grad), o.momentum ? b : null, o);
      close(await ctx.readFloat32(p), pR, `sgd param ${JSON.stringify(o)}`, 1e-6);
      if (o.momentum) close(await ctx.readFloat32(b), bR, `sgd buffer ${JSON.stringify(o)}`, 1e-6);
    }
  },
);

test("the weight gradient's split reduction covers every index once, in chunks of a multiple of 16", () => {
  for (const [tiles, total] of [
    [1, 6_422_528],
    [1, 450],
    [1, 100],
    [8, 25_088],
    [576, 1_000_000],
    [3, 1_601],
  ]) {
    const { splits, chunk } = weightGradientSplits(tiles, total);
    assert.ok(splits >= 1 && (splits - 1) * chunk < total && splits * chunk >= total, `${tiles} ${total}`);
    if (splits > 1) assert.equal(chunk % 16, 0);
    assert.ok(tiles * splits <= Math.max(tiles, 128 + tiles), `${tiles} tiles x ${splits} splits`);
  }
  assert.deepEqual(weightGradientSplits(1, 450), { splits: 3, chunk: 160 });
  assert.deepEqual(weightGradientSplits(576, 1_000_000), { splits: 1, chunk: 1_000_000 });
});
