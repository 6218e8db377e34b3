// Data: IDX files, Fashion-MNIST (find or download), image transforms and the batching DataLoader.
export { type DownloadOptions, downloadFiles, type FetchFn, md5Hex } from "./download.js";
export * from "./fashion-mnist.js";
export * from "./idx.js";
export { type Batch, DataLoader, type DataLoaderOptions, type Dataset } from "./loader.js";
export * from "./transforms.js";
