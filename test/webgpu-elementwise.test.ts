// The WebGPU element-wise kernels and dropout mask against the reference backend and the generator, the
// buffer pool's reuse, the batching of dispatches into one submit, and the message without an adapter.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ReferenceBackend } from "../src/backend/reference.js";
import {
  addInPlace,
  addRowBias,
  CHUNK,
  dropoutMask,
  mul,
  relu,
  reluBackward,
} from "../src/backend/webgpu/elementwise.js";
import { Generator } from "../src/rng.js";
import { close, openGpu, rng, stale, up } from "./webgpu-setup.js";

const { ctx: gpu, skip } = await openGpu();
after(() => gpu?.destroy());
const opts = { skip, timeout: 120_000 };
const ref = new ReferenceBackend();
const rand = rng(99);
function randn(len: number): Float32Array {
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) a[i] = rand() * 2 - 1;
  return a;
}

test(
  "relu (NaN kept), its backward, mul, add and row bias match the reference, in place too",
  opts,
  async () => {
    const ctx = gpu!;
    for (const len of [1, 255, 257, 70_001]) {
      const [x, dy, mask] = [randn(len), randn(len), randn(len)];
      x[len >> 1] = Number.NaN;
      const expect = (f: (out: Float32Array) => void) => {
        const out = new Float32Array(len);
        f(out);
        return out;
      };
      const yR = expect((o) => ref.relu(o, x));
      const y = stale(ctx, len);
      relu(ctx, y, up(ctx, x));
      close(await ctx.readFloat32(y), yR, `relu ${len}`, 0);
      const inPlace = up(ctx, x);
      relu(ctx, inPlace, inPlace);
      close(await ctx.readFloat32(inPlace), yR, `relu in place ${len}`, 0);
      const dxR = expect((o) => ref.reluBackward(o, dy, yR));
      const dyD = up(ctx, dy);
      reluBackward(ctx, dyD, dyD, y);
      close(await ctx.readFloat32(dyD), dxR, `relu backward in place ${len}`, 0);
      const mR = expect((o) => ref.mul(o, x, mask));
      const m = stale(ctx, len);
      mul(ctx, m, up(ctx, x), up(ctx, mask));
      close(await ctx.readFloat32(m), mR, `mul ${len}`, 0);
      const aR = x.slice();
      ref.addInPlace(aR, dy);
      const a = up(ctx, x);
      addInPlace(ctx, a, up(ctx, dy));
      close(await ctx.readFloat32(a), aR, `add ${len}`, 0);
    }
    for (const [rows, cols] of [
      [1, 1],
      [3, 7],
      [129, 10],
    ]) {
      const [y0, bias] = [randn(rows * cols), randn(cols)];
      const yR = y0.slice();
      ref.addRowBias(yR, bias, rows, cols);
      const y = up(ctx, y0);
      addRowBias(ctx, y, up(ctx, bias), rows, cols);
      close(await ctx.readFloat32(y), yR, `row bias ${rows}x${cols}`, 0);
    }
    assert.throws(
      () => mul(ctx, ctx.pool.acquire(4), ctx.pool.acquire(4), ctx.pool.acquire(5)),
      /Expected mask of length 4 but received length 5/,
    );
  },
);

test(
  "the dropout mask draws the generator's stream exactly: mask and state, across chunk edges",
  opts,
  async () => {
    const ctx = gpu!;
    for (const len of [1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17, 100_000])
      for (const p of [0.5, 0.3, 0, 1]) {
        const keep = p === 1 ? 0 : 1 / (1 - p);
        const cpu = new Generator(len + 1000 * p);
        cpu.random();
        const onGpu = new Generator(0);
        onGpu.setState(cpu.getState());
        const expected = new Float32Array(len);
        for (let i = 0; i < len; i++) expected[i] = cpu.random() >= p ? keep : 0;
        const mask = stale(ctx, len);
        dropoutMask(ctx, mask, p, keep, onGpu.stateWords());
        assert.deepEqual(await ctx.readFloat32(mask), expected, `mask of ${len} at p=${p}`);
        assert.deepEqual(onGpu.getState(), cpu.getState(), `generator state after ${len} draws`);
      }
  },
);

test(
  "buffers come back from the pool, and the dispatches before a read go out in one submit",
  opts,
  async () => {
    const ctx = gpu!;
    const a = ctx.pool.acquire(1000);
    ctx.pool.release(a);
    const reusedBefore = ctx.pool.reused;
    const b = ctx.pool.acquire(999);
    assert.equal(b.buffer, a.buffer, "a buffer of the same allocated size is reused");
    assert.equal(ctx.pool.reused, reusedBefore + 1);
    const x = up(ctx, randn(999));
    await ctx.sync();
    const before = ctx.submits;
    for (let i = 0; i < 50; i++) relu(ctx, b, x);
    await ctx.readFloat32(b);
    assert.equal(ctx.submits - before, 1, "50 dispatches and a read are one submit");
    const src = randn(37);
    const dst = stale(ctx, 40);
    ctx.copy(dst, up(ctx, src));
    assert.deepEqual((await ctx.readFloat32(dst)).subarray(0, 37), src, "copy, in order with the dispatches");
    assert.throws(
      () => ctx.copy(ctx.pool.acquire(3), dst),
      /Expected a destination of length >= 40 but received 3/,
    );
  },
);

test("without an adapter, the error names what Dawn looked for and how to get a CPU adapter", {
  timeout: 60_000,
}, () => {
  const setup = fileURLToPath(new URL("./webgpu-setup.js", import.meta.url));
  const script = `const { openGpu } = await import(${JSON.stringify(setup)});
try { const r = await openGpu(); console.log(r.skip || "no error"); } catch (e) { console.log(e.message); }`;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, VK_ICD_FILENAMES: "/nonexistent/icd.json", CI: "1" },
    encoding: "utf8",
    timeout: 50_000,
  });
  assert.equal(child.status, 0, child.stderr);
  if (child.stdout.includes('package "webgpu"')) {
    assert.match(child.stdout, /npm install webgpu/);
    return;
  }
  assert.match(child.stdout, /Dawn found no WebGPU adapter/);
  assert.match(child.stdout, /VK_ICD_FILENAMES=\/nonexistent\/icd\.json/);
  assert.match(child.stdout, /set VK_ICD_FILENAMES=\/usr\/lib\/chromium\/vk_swiftshader_icd\.json/);
});
