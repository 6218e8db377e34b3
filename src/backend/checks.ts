// Buffer and geometry checks shared by both backends, so both reject bad calls with the same messages
// before any kernel runs (the native binding re-checks in C++).
import type { Conv2dGeometry, Pool2dGeometry } from "./backend.js";

export function expectLength(what: string, a: ArrayLike<number>, n: number): void {
  if (a.length !== n) throw new RangeError(`Expected ${what} of length ${n} but received length ${a.length}`);
}

export function expectSize(what: string, v: number, min = 0): void {
  if (!Number.isInteger(v) || v < min || v > 2147483647)
    throw new RangeError(`Expected ${what} to be an integer >= ${min} but received ${v}`);
}

/** Validates a conv geometry and returns the buffer lengths it implies. */
export function checkConv(g: Conv2dGeometry): { x: number; w: number; y: number } {
  for (const key of ["n", "cIn", "h", "w", "cOut", "kh", "kw", "padH", "padW", "outH", "outW"] as const)
    expectSize(`g.${key}`, g[key]);
  expectSize("g.strideH", g.strideH, 1);
  expectSize("g.strideW", g.strideW, 1);
  return {
    x: g.n * g.cIn * g.h * g.w,
    w: g.cOut * g.cIn * g.kh * g.kw,
    y: g.n * g.cOut * g.outH * g.outW,
  };
}

/** Validates a pooling geometry and returns the buffer lengths it implies. */
export function checkPool(g: Pool2dGeometry): { x: number; y: number } {
  for (const key of ["n", "c", "h", "w", "kh", "kw", "padH", "padW", "outH", "outW"] as const)
    expectSize(`g.${key}`, g[key]);
  expectSize("g.strideH", g.strideH, 1);
  expectSize("g.strideW", g.strideW, 1);
  return { x: g.n * g.c * g.h * g.w, y: g.n * g.c * g.outH * g.outW };
}
