// Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 60,000 training and 10,000 test images of 28x28 grey
// pixels in 10 classes. Finds the four IDX files (first found wins) or downloads them from the official mirror.

import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { downloadFiles, type FetchFn } from "./download.js";
import { readIdxPair } from "./idx.js";

export const FASHION_MNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
] as const;

export type Split = "train" | "test";

/** File names without the optional `.gz` suffix. */
export const FASHION_MNIST_FILES: Record<Split, { images: string; labels: string }> = {
  train: { images: "train-images-idx3-ubyte", labels: "train-labels-idx1-ubyte" },
  test: { images: "t10k-images-idx3-ubyte", labels: "t10k-labels-idx1-ubyte" },
};

/** The dataset authors' mirror (Zalando Research), as used by torchvision and Keras. */
export const FASHION_MNIST_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/** Published MD5 digests of the compressed files on the mirror (as listed by torchvision). */
export const FASHION_MNIST_MD5: Record<string, string> = {
  "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
  "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
  "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
  "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
};

/** Pixel mean and standard deviation of the training set in [0, 1] units, for the loader's `normalize`. */
export const FASHION_MNIST_MEAN = 0.286;
export const FASHION_MNIST_STD = 0.353;

/** Where Debian's `dataset-fashion-mnist` package installs the files. */
export const SYSTEM_DATA_DIR = "/usr/share/datasets/fashion-mnist";

export interface LocateOptions {
  /** An explicit directory (the CLI's --data-dir); searched first. */
  dataDir?: string;
  /** Environment to read FASHION_MNIST_DIR, XDG_CACHE_HOME and HOME from (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** System-wide directories searched last (default: [SYSTEM_DATA_DIR]). */
  systemDirs?: readonly string[];
}

export interface LoadOptions extends LocateOptions {
  split: Split;
  /** Download into the cache when no location has the files (default: true). */
  download?: boolean;
  /** Injectable for tests: the mirror, the fetch function, the digests and the progress bar. */
  baseUrl?: string;
  fetch?: FetchFn;
  md5?: Record<string, string>;
  progress?: boolean;
}

export interface FashionMnist {
  images: Uint8Array; // (count, rows, cols), row-major
  labels: Uint8Array; // (count)
  count: number;
  rows: number;
  cols: number;
}

export interface Location {
  dir: string;
  /** How the directory was chosen, for messages. */
  source: string;
}

/** The user cache directory: $XDG_CACHE_HOME/vgg-ts/fashion-mnist, or ~/.cache/vgg-ts/fashion-mnist. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME ? env.XDG_CACHE_HOME : join(env.HOME ?? homedir(), ".cache");
  return join(base, "vgg-ts", "fashion-mnist");
}

/** Every place searched, in order. */
export function candidateLocations(options: LocateOptions = {}): Location[] {
  const env = options.env ?? process.env;
  const out: Location[] = [];
  if (options.dataDir) out.push({ dir: resolve(options.dataDir), source: "--data-dir" });
  if (env.FASHION_MNIST_DIR) out.push({ dir: resolve(env.FASHION_MNIST_DIR), source: "FASHION_MNIST_DIR" });
  out.push({ dir: cacheDir(env), source: "user cache" });
  for (const dir of options.systemDirs ?? [SYSTEM_DATA_DIR]) out.push({ dir, source: "system" });
  return out;
}

/** The path of `name` in `dir`, preferring `name.gz`; undefined when neither exists. */
function findFile(dir: string, name: string): string | undefined {
  for (const candidate of [join(dir, `${name}.gz`), join(dir, name)]) {
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** The first location holding both files of the split, with their paths. */
export function locateFashionMnist(
  split: Split,
  options: LocateOptions = {},
): { location: Location; imagesPath: string; labelsPath: string } | undefined {
  const names = FASHION_MNIST_FILES[split];
  for (const location of candidateLocations(options)) {
    const imagesPath = findFile(location.dir, names.images);
    const labelsPath = findFile(location.dir, names.labels);
    if (imagesPath && labelsPath) return { location, imagesPath, labelsPath };
  }
  return undefined;
}

function notFoundMessage(split: Split, options: LoadOptions, downloadFailure?: string): string {
  const names = FASHION_MNIST_FILES[split];
  const looked = candidateLocations(options)
    .map((l) => `  - ${l.dir} (${l.source})`)
    .join("\n");
  const download = downloadFailure
    ? `The download from ${options.baseUrl ?? FASHION_MNIST_MIRROR} failed: ${downloadFailure}\n`
    : "Downloading was disabled.\n";
  return (
    `Expected the Fashion-MNIST ${split} files ${names.images}(.gz) and ${names.labels}(.gz) but found them ` +
    `in none of these places:\n${looked}\n${download}` +
    "To get the data: `sudo apt-get install dataset-fashion-mnist` (Debian), or download the four files from " +
    `${FASHION_MNIST_MIRROR} into a directory and pass --data-dir DIR or set FASHION_MNIST_DIR=DIR.`
  );
}

/** Downloads the four files of the dataset into the user cache (skipping those already verified). */
export async function downloadFashionMnist(options: Omit<LoadOptions, "split"> = {}): Promise<string> {
  const dir = cacheDir(options.env ?? process.env);
  const md5 = options.md5 ?? FASHION_MNIST_MD5;
  const files = Object.values(FASHION_MNIST_FILES).flatMap((f) => [f.images, f.labels]);
  await downloadFiles({
    baseUrl: options.baseUrl ?? FASHION_MNIST_MIRROR,
    dir,
    files: files.map((name) => ({ name: `${name}.gz`, md5: md5[`${name}.gz`] })),
    fetch: options.fetch,
    progress: options.progress,
  });
  return dir;
}

/** Loads one split, searching the usual places and downloading into the cache when allowed. */
export async function loadFashionMnist(options: LoadOptions): Promise<FashionMnist> {
  const { split } = options;
  if (split !== "train" && split !== "test") {
    throw new Error(`Expected split "train" or "test" but received ${JSON.stringify(split)}`);
  }
  let found = locateFashionMnist(split, options);
  if (found === undefined) {
    if (options.download === false) throw new Error(notFoundMessage(split, options));
    try {
      await downloadFashionMnist(options);
    } catch (err) {
      const reason = err instanceof Error ? describeError(err) : String(err);
      throw new Error(notFoundMessage(split, options, reason));
    }
    found = locateFashionMnist(split, options);
    if (found === undefined) throw new Error(notFoundMessage(split, options, "files missing after download"));
  }
  const data = readIdxPair(found.imagesPath, found.labelsPath, FASHION_MNIST_CLASSES.length);
  return { images: data.images, labels: data.labels, count: data.count, rows: data.rows, cols: data.cols };
}

/** fetch() reports network failures as "fetch failed" with the useful part in `cause`. */
function describeError(err: Error): string {
  const cause = (err as Error & { cause?: unknown }).cause;
  return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
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
