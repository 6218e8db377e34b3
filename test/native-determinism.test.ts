// Determinism of the native backend across processes: the Winograd-or-im2col choice is measured once per
// machine and recorded in the kernel cache file, so two separate processes (sharing a fresh cache) compute
// a small conv net's forward and backward bit for bit identically; the file, not timing, decides; a corrupt
// file is ignored with a warning; VGG_CONV_ALGO forces an algorithm.
// Run as a child (VGG_DETERMINISM_CHILD=1) this file computes the net and prints a JSON summary instead.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Conv2dGeometry, Pool2dGeometry } from "../src/backend/backend.js";
import { loadNativeAddon, NativeBackend } from "../src/backend/native.js";

interface ChildResult {
  digest: string;
  kernels: string[];
  cacheFile: string;
}

function conv(n: number, cIn: number, hw: number, cOut: number, pad: number): Conv2dGeometry {
  const out = hw + 2 * pad - 2;
  return {
    n,
    cIn,
    h: hw,
    w: hw,
    cOut,
    kh: 3,
    kw: 3,
    strideH: 1,
    strideW: 1,
    padH: pad,
    padW: pad,
    outH: out,
    outW: out,
  };
}

// The child: conv(3x3) + ReLU -> max-pool 2x2 -> conv(3x3), forward and backward, at batch 4 (the batch
// split over 2 threads) and batch 3 (one image at a time, each split over the threads).
function runChild(): void {
  const addon = loadNativeAddon();
  if (addon instanceof Error) throw addon;
  const be = new NativeBackend(addon);
  be.setNumThreads(2);
  let seed = 7;
  const randn = (len: number): Float32Array => {
    const a = new Float32Array(len);
    for (let i = 0; i < len; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      a[i] = seed / 2147483648 - 1;
    }
    return a;
  };
  const hash = createHash("sha256");
  const kernels: string[] = [];
  const add = (a: Float32Array | Int32Array): void => {
    hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  };
  for (const n of [4, 3]) {
    const g1 = conv(n, 5, 30, 24, 1);
    const p: Pool2dGeometry = {
      n,
      c: 24,
      h: 30,
      w: 30,
      kh: 2,
      kw: 2,
      strideH: 2,
      strideW: 2,
      padH: 0,
      padW: 0,
      outH: 15,
      outW: 15,
    };
    const g2 = conv(n, 24, 15, 20, 1);
    const x = randn(n * 5 * 30 * 30);
    const w1 = randn(24 * 5 * 9);
    const b1 = randn(24);
    const w2 = randn(20 * 24 * 9);
    const y1 = new Float32Array(n * 24 * 900);
    const pooled = new Float32Array(n * 24 * 225);
    const argmax = new Int32Array(pooled.length);
    const y2 = new Float32Array(n * 20 * 225);
    be.conv2dForward(y1, x, w1, b1, g1, true);
    be.maxPool2dForward(pooled, argmax, y1, p);
    be.conv2dForward(y2, pooled, w2, null, g2, false);
    const dy2 = randn(y2.length);
    const dw2 = new Float32Array(w2.length);
    const dPooled = new Float32Array(pooled.length);
    be.conv2dBackwardWeight(dw2, null, dy2, pooled, g2);
    be.conv2dBackwardInput(dPooled, dy2, w2, g2);
    const dy1 = new Float32Array(y1.length);
    be.maxPool2dBackward(dy1, dPooled, argmax, p);
    be.reluBackward(dy1, dy1, y1);
    const dw1 = new Float32Array(w1.length);
    const db1 = new Float32Array(b1.length);
    const dx = new Float32Array(x.length);
    be.conv2dBackwardWeight(dw1, db1, dy1, x, g1);
    be.conv2dBackwardInput(dx, dy1, w1, g1);
    for (const a of [y1, argmax, y2, dw2, dPooled, dw1, db1, dx]) add(a);
    for (const g of [g1, g2])
      kernels.push(`${be.convKernel(g, "forward")} / ${be.convKernel(g, "backward")}`);
  }
  const result: ChildResult = { digest: hash.digest("hex"), kernels, cacheFile: be.info().kernelCache };
  process.stdout.write(JSON.stringify(result));
}

function spawnChild(env: Record<string, string>): { result: ChildResult; stderr: string } {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
    env: { ...process.env, VGG_DETERMINISM_CHILD: "1", VGG_CONV_ALGO: "", ...env },
    encoding: "utf8",
  });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return { result: JSON.parse(r.stdout) as ChildResult, stderr: r.stderr };
}

if (process.env.VGG_DETERMINISM_CHILD === "1") {
  runChild();
} else {
  test("two processes sharing a fresh kernel cache compute bit-identical forward and backward passes", () => {
    const dir = mkdtempSync(join(tmpdir(), "vgg-kernels-"));
    try {
      const file = join(dir, "sub", "conv-kernels.json");
      const first = spawnChild({ VGG_KERNEL_CACHE: file });
      assert.equal(first.result.cacheFile, file);
      const written = readFileSync(file, "utf8");
      const recorded = JSON.parse(written) as { version: number; convKernels: Record<string, string> };
      assert.equal(recorded.version, 1);
      // 2 layers x (forward at both batch modes; input and weight gradients of the split batch: one image
      // at a time they always run as GEMM), each keyed by CPU, ISA and thread count.
      const keys = Object.keys(recorded.convKernels);
      assert.equal(keys.length, 8, written);
      for (const key of keys)
        assert.match(
          key,
          /\|threads=2\|conv3x3 (forward|backward-input|backward-weight) (batch-split|per-image)\|/,
        );
      const second = spawnChild({ VGG_KERNEL_CACHE: file });
      assert.equal(second.result.digest, first.result.digest);
      assert.deepEqual(second.result.kernels, first.result.kernels);
      assert.equal(readFileSync(file, "utf8"), written, "the second process measured nothing new");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the recorded choice, not a new measurement, decides the kernel", () => {
    const dir = mkdtempSync(join(tmpdir(), "vgg-kernels-"));
    try {
      const file = join(dir, "conv-kernels.json");
      spawnChild({ VGG_KERNEL_CACHE: file });
      const recorded = JSON.parse(readFileSync(file, "utf8")) as { convKernels: Record<string, string> };
      // "winograd4" recorded for a weight gradient (which has no F(4x4) kernel) means F(2x2).
      const names: Record<string, string> = {
        winograd: "winograd F(2x2,3x3)",
        winograd4: "winograd F(4x4,3x3)",
        direct: "im2col+gemm",
      };
      for (const choice of ["winograd", "winograd4", "direct"]) {
        for (const key of Object.keys(recorded.convKernels)) recorded.convKernels[key] = choice;
        writeFileSync(file, JSON.stringify(recorded));
        const { result } = spawnChild({ VGG_KERNEL_CACHE: file });
        const name = names[choice];
        const batch = `${name} / ${name}`;
        const perImage = `${name} / im2col+gemm`;
        assert.deepEqual(result.kernels, [batch, batch, perImage, perImage]);
        const forced = spawnChild({
          VGG_CONV_ALGO: choice,
          VGG_KERNEL_CACHE: "off",
        });
        assert.equal(forced.result.digest, result.digest, `VGG_CONV_ALGO=${choice} gives the same bits`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a corrupt kernel cache is ignored with a warning and rewritten", () => {
    const dir = mkdtempSync(join(tmpdir(), "vgg-kernels-"));
    try {
      const file = join(dir, "conv-kernels.json");
      writeFileSync(file, '{"version": 1, "convKernels": {"x": ');
      const { stderr } = spawnChild({ VGG_KERNEL_CACHE: file });
      assert.match(
        stderr,
        /vgg-ts: warning: ignoring the kernel cache .*conv-kernels\.json because it is not a valid cache file/,
      );
      const rewritten = JSON.parse(readFileSync(file, "utf8")) as { convKernels: Record<string, string> };
      assert.equal(Object.keys(rewritten.convKernels).length, 8);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("with the direct algorithm, forward, input and bias gradients match across thread counts; weight gradients of a split batch do not", () => {
    const addon = loadNativeAddon();
    if (addon instanceof Error) throw addon;
    const be = new NativeBackend(addon);
    be.setConvAlgorithm("direct");
    try {
      // Batch 4 splits over 2 threads (one image at a time on 3); 4x4 maps run as one GEMM over the batch.
      for (const [n, hw] of [
        [4, 20],
        [3, 20],
        [8, 4],
      ]) {
        const g = conv(n, 8, hw, 12, 1);
        let seed = 3;
        const randn = (len: number) =>
          Float32Array.from({ length: len }, () => {
            seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
            return seed / 2147483648 - 1;
          });
        const x = randn(n * 8 * hw * hw);
        const w = randn(12 * 8 * 9);
        const b = randn(12);
        const dy = randn(n * 12 * hw * hw);
        const run = (threads: number) => {
          be.setNumThreads(threads);
          const out = {
            y: new Float32Array(dy.length),
            dx: new Float32Array(x.length),
            dw: new Float32Array(w.length),
          };
          const db = new Float32Array(12);
          be.conv2dForward(out.y, x, w, b, g, true);
          be.conv2dBackwardInput(out.dx, dy, w, g);
          be.conv2dBackwardWeight(out.dw, db, dy, x, g);
          return { ...out, db };
        };
        const [one, two, three] = [run(1), run(2), run(3)];
        for (const key of ["y", "dx", "db"] as const) {
          assert.deepEqual(two[key], one[key], `${key} (n=${n}, ${hw}x${hw}) on 2 threads`);
          assert.deepEqual(three[key], one[key], `${key} (n=${n}, ${hw}x${hw}) on 3 threads`);
        }
        // The split batch sums per-thread partial weight gradients: same values up to rounding only.
        const splitOverTwo = n === 4;
        if (!splitOverTwo) assert.deepEqual(two.dw, one.dw);
        for (let i = 0; i < one.dw.length; i++)
          assert.ok(Math.abs(two.dw[i] - one.dw[i]) <= 1e-4 * (1 + Math.abs(one.dw[i])), `dw[${i}]`);
      }
    } finally {
      be.setConvAlgorithm("auto");
      be.setNumThreads(2);
    }
  });

  test("VGG_CONV_ALGO must name an algorithm", () => {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, VGG_DETERMINISM_CHILD: "1", VGG_CONV_ALGO: "fastest" },
      encoding: "utf8",
    });
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      /Expected VGG_CONV_ALGO to be "auto", "direct", "winograd" or "winograd4" but received "fastest"; hint: unset it/,
    );
  });
}
