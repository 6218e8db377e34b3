// ITU-R 601 luma, as PIL's convert("L"): 0.299 R + 0.587 G + 0.114 B, summed in that order in float64.
// One formula for toGrey (image.ts) and the PNG decoder's luma plane (png-fast.ts), which must agree bit for bit.

export function luma(r: number, g: number, b: number): number {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}
