// Test helpers: seeded random tensors, a finite-difference gradient check, conv geometries, small
// Fashion-MNIST-format data sets, and child processes with a hang guard.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { noGrad } from "../src/autograd.js";
import type { Conv2dGeometry } from "../src/backend/backend.js";
import { FASHION_MNIST_FILES, locateFashionMnist } from "../src/data/fashion-mnist.js";
import { encodeIdx } from "../src/data/idx.js";
import { Generator } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";

/** A conv's geometry: n images of cIn channels, h x w, to cOut channels with a k x k kernel. */
export function convGeometry(
  n: number,
  cIn: number,
  h: number,
  w: number,
  cOut: number,
  k: number,
  stride: number,
  pad: number,
): Conv2dGeometry {
  const outH = Math.floor((h + 2 * pad - k) / stride) + 1;
  const outW = Math.floor((w + 2 * pad - k) / stride) + 1;
  return {
    n,
    cIn,
    h,
    w,
    cOut,
    kh: k,
    kw: k,
    strideH: stride,
    strideW: stride,
    padH: pad,
    padW: pad,
    outH,
    outW,
  };
}

/** A random tensor with values in [lo, hi), from its own seeded generator. */
export function randomTensor(shape: number[], seed: number, lo = -1, hi = 1, requiresGrad = true): Tensor {
  const g = new Generator(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = g.uniform(lo, hi);
  return new Tensor(data, shape, { requiresGrad });
}

/**
 * Central finite differences against autograd. The scalar objective is sum(f(inputs) * R) for a fixed
 * random R, evaluated in float64 from the float32 outputs. eps and the tolerance suit float32 data.
 */
export function gradcheck(
  f: (...inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  { eps = 1e-2, atol = 2e-3, rtol = 2e-2, seed = 7 } = {},
): number {
  const out = f(...inputs);
  const g = new Generator(seed);
  const r = new Float32Array(out.size);
  for (let i = 0; i < r.length; i++) r[i] = g.uniform(-1, 1);
  const objective = () =>
    noGrad(() => {
      const y = f(...inputs);
      let s = 0;
      for (let i = 0; i < y.size; i++) s += y.data[i] * r[i];
      return s;
    });
  for (const t of inputs) t.grad = null;
  out.backward(new Tensor(r, out.shape));
  let worst = 0;
  inputs.forEach((t, k) => {
    if (!t.requiresGrad) return;
    assert.ok(t.grad, `input ${k} received no gradient`);
    for (let i = 0; i < t.size; i++) {
      const orig = t.data[i];
      t.data[i] = orig + eps;
      const up = objective();
      t.data[i] = orig - eps;
      const down = objective();
      t.data[i] = orig;
      const numeric = (up - down) / (2 * eps);
      const analytic = t.grad.data[i];
      const err = Math.abs(numeric - analytic);
      worst = Math.max(worst, err);
      assert.ok(
        err <= atol + rtol * Math.abs(numeric),
        `input ${k}[${i}]: analytic ${analytic} vs numeric ${numeric} (|diff| ${err})`,
      );
    }
  });
  return worst;
}

/** A running child process with its combined output and how it ended. */
export interface Started {
  child: ChildProcess;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  /** Resolves when the process has exited: with its code, or the signal that ended it. */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }>;
}

/**
 * Spawns `node bin/vgg ...args` with a hang guard: after `timeoutMs` (generous; it only turns a hang into a
 * failure with a message, never asserts speed) the child is killed and `done` reports `timedOut`.
 */
export function startVgg(
  args: string[],
  { env = process.env, timeoutMs = 120_000 }: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Started {
  const child = spawn(process.execPath, ["bin/vgg", ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (d) => (out += d));
  child.stderr?.on("data", (d) => (out += d));
  let timedOut = false;
  const guard = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }>(
    (resolve) =>
      child.on("close", (code, signal) => {
        clearTimeout(guard);
        resolve({ code, signal, timedOut });
      }),
  );
  return { child, output: () => out, done };
}

/**
 * Polls `ready` (a cheap check of what the child wrote: a file, its output) until it holds, and resolves
 * true; resolves false if the child exits first. The poll interval only bounds how late the caller reacts.
 */
export async function waitUntil(p: Started, ready: () => boolean, intervalMs = 2): Promise<boolean> {
  let exited = false;
  p.done.then(() => (exited = true));
  for (;;) {
    if (ready()) return true;
    if (exited) return ready();
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Why a test that needs the real Fashion-MNIST images (their accuracy, their counts) is skipped, or false
 * when they are found or CI is set (CI installs them, so there a missing data set fails the test).
 */
export function skipWithoutRealData(): string | false {
  const found = locateFashionMnist("train") !== undefined && locateFashionMnist("test") !== undefined;
  return found || process.env.CI
    ? false
    : "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)";
}

export interface SyntheticData {
  /** The folder holding the four files, for --data-dir or FASHION_MNIST_DIR. */
  dir: string;
  train: { images: Uint8Array; labels: Uint8Array };
  test: { images: Uint8Array; labels: Uint8Array };
}

/**
 * Writes the four Fashion-MNIST files (gzipped, as the mirror serves them, or raw) into `dir`, holding
 * `train` and `test` 28x28 pictures of a quickly learnt task: class c < 9 is an 8x8 bright square in cell c
 * of a 3x3 grid, class 9 a bright bar across the middle, over dim noise. Labels run through the ten classes
 * in a seeded order, so each class has n/10 pictures when n is a multiple of 10.
 */
export function writeSyntheticFashionMnist(
  dir: string,
  { train = 1024, test = 256, gzip = true, seed = 0 } = {},
): SyntheticData {
  mkdirSync(dir, { recursive: true });
  const g = new Generator(seed);
  const make = (n: number) => {
    const labels = new Uint8Array(n);
    for (let i = 0; i < n; i += 10) {
      const order = g.permutation(10);
      for (let k = 0; k < 10 && i + k < n; k++) labels[i + k] = order[k];
    }
    const images = new Uint8Array(n * 784);
    for (let i = 0; i < n; i++) {
      const c = labels[i];
      const [r0, c0, h, w] = c < 9 ? [2 + 8 * Math.floor(c / 3), 2 + 8 * (c % 3), 8, 8] : [12, 2, 4, 24];
      for (let p = 0; p < 784; p++) {
        const [r, col] = [Math.floor(p / 28), p % 28];
        const on = r >= r0 && r < r0 + h && col >= c0 && col < c0 + w;
        images[i * 784 + p] = on ? 160 + g.int(96) : g.int(48);
      }
    }
    return { images, labels };
  };
  const data = { train: make(train), test: make(test) };
  for (const split of ["train", "test"] as const) {
    const { images, labels } = data[split];
    const names = FASHION_MNIST_FILES[split];
    const write = (name: string, bytes: Uint8Array) =>
      writeFileSync(join(dir, gzip ? `${name}.gz` : name), gzip ? gzipSync(bytes) : bytes);
    write(names.images, encodeIdx([labels.length, 28, 28], images));
    write(names.labels, encodeIdx([labels.length], labels));
  }
  return { dir, ...data };
}

/**
 * Runs `f` with the global Uint8Array constructor watched and returns the longest length code running in
 * the meantime asked `new Uint8Array(n)` for: a measure of what an input made a reader allocate that does not
 * depend on the machine's speed. (Libraries that kept their own reference to Uint8Array are not seen.)
 */
export function largestUint8Array(f: () => void): number {
  const Original = globalThis.Uint8Array;
  let largest = 0;
  globalThis.Uint8Array = new Proxy(Original, {
    construct(target, args, newTarget) {
      if (typeof args[0] === "number") largest = Math.max(largest, args[0]);
      return Reflect.construct(target, args, newTarget === globalThis.Uint8Array ? target : newTarget);
    },
  });
  try {
    f();
  } finally {
    globalThis.Uint8Array = Original;
  }
  return largest;
}
