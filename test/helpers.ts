// Test helpers: seeded random tensors and a finite-difference gradient check.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { noGrad } from "../src/autograd.js";
import { Generator } from "../src/rng.js";
import { Tensor } from "../src/tensor.js";

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
