// `--classes`: train or evaluate on a subset of Fashion-MNIST's classes.
import type { FashionMnist } from "../data/fashion-mnist.js";

export function classList(v: string): number[] {
  const classes = v.split(",").map((c) => Number(c.trim()));
  if (
    classes.length === 0 ||
    classes.some((c) => !Number.isInteger(c) || c < 0 || c > 9) ||
    new Set(classes).size !== classes.length
  )
    throw new Error(`Expected --classes to be distinct class indices 0-9 like "0,1,2" but received "${v}"`);
  return classes;
}

/** Keeps the examples of the chosen classes, relabelled 0..k-1 in the order given. */
export function selectClasses(set: FashionMnist, classes: readonly number[]): FashionMnist {
  const label = new Int32Array(256).fill(-1);
  classes.forEach((c, i) => {
    label[c] = i;
  });
  const keep: number[] = [];
  for (let i = 0; i < set.count; i++) if (label[set.labels[i]] >= 0) keep.push(i);
  const plane = set.rows * set.cols;
  const images = new Uint8Array(keep.length * plane);
  keep.forEach((src, dst) => {
    images.set(set.images.subarray(src * plane, (src + 1) * plane), dst * plane);
  });
  return { ...set, images, labels: Uint8Array.from(keep, (i) => label[set.labels[i]]), count: keep.length };
}
