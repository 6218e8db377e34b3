// `--classes`: train or evaluate on a subset of Fashion-MNIST's classes.
export { selectClasses } from "../data/fashion-mnist.js";

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
