// Test data for the MPI tests: a small synthetic Fashion-MNIST in IDX files (10 classes of seeded
// stripe-and-blob pictures with noise, learnable in a few steps), written to a folder the test owns.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Generator } from "../src/rng.js";

function idx(magic: number, dims: number[], body: Uint8Array): Uint8Array {
  const header = new DataView(new ArrayBuffer(4 + 4 * dims.length));
  header.setUint32(0, magic);
  for (let i = 0; i < dims.length; i++) header.setUint32(4 + 4 * i, dims[i]);
  const out = new Uint8Array(header.byteLength + body.length);
  out.set(new Uint8Array(header.buffer), 0);
  out.set(body, header.byteLength);
  return out;
}

function pictures(count: number, seed: number): { images: Uint8Array; labels: Uint8Array } {
  const g = new Generator(seed);
  const images = new Uint8Array(count * 28 * 28);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const c = g.int(10);
    labels[n] = c;
    for (let i = 0; i < 28; i++)
      for (let j = 0; j < 28; j++) {
        // Class c: stripes of period 2 + c/2, horizontal for even c and vertical for odd, plus noise.
        const along = c % 2 === 0 ? i : j;
        const on = Math.floor(along / (2 + (c >> 1))) % 2 === 0;
        const v = (on ? 180 : 40) + g.int(60);
        images[n * 784 + i * 28 + j] = Math.min(255, v);
      }
  }
  return { images, labels };
}

/** Writes train (train images) and t10k (test images) IDX files into dir and returns dir. */
export function writeSyntheticFashionMnist(dir: string, train = 512, test = 128): string {
  mkdirSync(dir, { recursive: true });
  for (const [prefix, count, seed] of [
    ["train", train, 1],
    ["t10k", test, 2],
  ] as const) {
    const { images, labels } = pictures(count, seed);
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte`), idx(0x803, [count, 28, 28], images));
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte`), idx(0x801, [count], labels));
  }
  return dir;
}
