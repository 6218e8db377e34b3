// Shapes: the bottom of the core's import order (shape < memory < autograd < tensor; each imports only
// those before it).
export type Shape = readonly number[];

export function shapeSize(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}
