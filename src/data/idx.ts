// Reader for the IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
// Layout: 2 zero bytes, a data-type byte (0x08 = unsigned byte), a dimension-count byte, then one big-endian
// uint32 per dimension, then the data in row-major order. Labels are magic 2049 (0x00000801, 1 dim),
// images 2051 (0x00000803, 3 dims: count, rows, cols).

import { readFileSync, statSync } from "node:fs";
import { basename } from "node:path";
import { Gunzip } from "fflate";

export type IdxKind = "images" | "labels";

const MAGIC: Record<IdxKind, number> = { labels: 2049, images: 2051 };
const NDIM: Record<IdxKind, number> = { labels: 1, images: 3 };
/** The largest payload this reader accepts; far above Fashion-MNIST's 47 MB, well below memory limits. */
const MAX_BYTES = 2 ** 31 - 1;

export interface IdxImages {
  images: Uint8Array; // (count, rows, cols)
  count: number;
  rows: number;
  cols: number;
}

export interface IdxLabels {
  labels: Uint8Array; // (count)
  count: number;
}

/** True when the bytes start with the gzip magic 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

interface Header {
  dims: number[];
  headerBytes: number;
  /** Header plus payload: the exact length the file must have. */
  totalBytes: number;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}

function describeMagic(magic: number): string {
  if (magic === MAGIC.labels) return " (a labels file); check that the file names are not swapped";
  if (magic === MAGIC.images) return " (an images file); check that the file names are not swapped";
  if (magic >>> 16 !== 0) return "; this is not an IDX file";
  return ` (data type 0x${((magic >>> 8) & 0xff).toString(16).padStart(2, "0")}, ${magic & 0xff} dimensions)`;
}

/** Parses and checks the header once enough bytes are present; returns undefined while more are needed. */
function parseHeader(bytes: Uint8Array, length: number, kind: IdxKind, name: string): Header | undefined {
  if (length < 4) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, length);
  const magic = view.getUint32(0);
  // The magic packs two zero bytes, the data type (0x08 = unsigned byte) and the dimension count.
  if (magic !== MAGIC[kind]) {
    throw new Error(
      `${name}: expected an IDX ${kind} file (magic ${MAGIC[kind]} = ${hex(MAGIC[kind])}: unsigned bytes, ` +
        `${NDIM[kind]} dimension${NDIM[kind] > 1 ? "s" : ""}) but found magic ${magic} = ${hex(magic)}` +
        `${describeMagic(magic)}`,
    );
  }
  const ndim = NDIM[kind];
  const headerBytes = 4 + 4 * ndim;
  if (length < headerBytes) return undefined;
  const dims: number[] = [];
  let payload = 1;
  for (let i = 0; i < ndim; i++) {
    const d = view.getUint32(4 + 4 * i);
    dims.push(d);
    payload *= d;
  }
  if (kind === "images" && (dims[1] === 0 || dims[2] === 0)) {
    throw new Error(`${name}: expected images of at least 1x1 pixels but found ${dims[1]}x${dims[2]}`);
  }
  if (payload > MAX_BYTES) {
    throw new Error(
      `${name}: expected at most ${MAX_BYTES} bytes of data but the header claims ${payload} ` +
        `(${describeDims(kind, dims)}); the file is corrupt`,
    );
  }
  return { dims, headerBytes, totalBytes: headerBytes + payload };
}

function describeDims(kind: IdxKind, dims: number[]): string {
  return kind === "images" ? `${dims[0]} images of ${dims[1]}x${dims[2]}` : `${dims[0]} labels`;
}

function lengthError(name: string, kind: IdxKind, header: Header, found: string): Error {
  return new Error(
    `${name}: expected ${header.totalBytes} bytes for ${describeDims(kind, header.dims)} but found ${found}; ` +
      "the file is truncated or corrupt, delete it and download it again",
  );
}

function shortHeaderError(name: string, kind: IdxKind, found: number): Error {
  return new Error(
    `${name}: expected an IDX ${kind} header of ${4 + 4 * NDIM[kind]} bytes but found ${found} bytes; ` +
      "the file is truncated or not an IDX file",
  );
}

/**
 * Decompresses gzip data chunk by chunk, checking the IDX header as soon as it arrives. Output beyond the
 * length the header claims is never stored, so a corrupt header or a gzip bomb cannot exhaust memory.
 */
function gunzipIdx(
  compressed: Uint8Array,
  kind: IdxKind,
  name: string,
): { bytes: Uint8Array; header: Header } {
  const chunks: Uint8Array[] = [];
  let stored = 0;
  let header: Header | undefined;
  let headBuf = new Uint8Array(0);
  const stream = new Gunzip((chunk) => {
    if (header === undefined) {
      const merged = new Uint8Array(headBuf.length + chunk.length);
      merged.set(headBuf);
      merged.set(chunk, headBuf.length);
      headBuf = merged.length <= 1024 ? merged : merged.slice(0, 1024);
      header = parseHeader(headBuf, headBuf.length, kind, name);
    }
    if (header !== undefined && stored + chunk.length > header.totalBytes) {
      throw lengthError(name, kind, header, `more (trailing data after byte ${header.totalBytes})`);
    }
    chunks.push(chunk);
    stored += chunk.length;
  });
  // 256 KiB of input per push: as fast as one-shot inflation, and at deflate's maximum ratio (1032:1) one
  // push yields at most ~270 MB before the length check can refuse it.
  const step = 1 << 18;
  try {
    for (let off = 0; off < compressed.length; off += step) {
      const end = Math.min(off + step, compressed.length);
      stream.push(compressed.subarray(off, end), end === compressed.length);
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (message.startsWith(`${name}:`)) throw err;
    throw new Error(
      `${name}: expected valid gzip data but decompression failed (${message}) after ${stored} bytes; ` +
        "the file is truncated or corrupt, delete it and download it again",
    );
  }
  if (header === undefined) throw shortHeaderError(name, kind, stored);
  if (stored !== header.totalBytes) throw lengthError(name, kind, header, String(stored));
  const bytes = new Uint8Array(stored);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.length;
  }
  return { bytes, header };
}

/** Checks an IDX buffer (raw or gzip) and returns its dimensions and payload (a view, no copy for raw). */
export function parseIdx(
  input: Uint8Array,
  kind: IdxKind,
  name = "IDX data",
): { dims: number[]; data: Uint8Array } {
  let bytes: Uint8Array;
  let header: Header | undefined;
  if (isGzip(input)) {
    ({ bytes, header } = gunzipIdx(input, kind, name));
  } else {
    bytes = input;
    header = parseHeader(bytes, bytes.length, kind, name);
    if (header === undefined) throw shortHeaderError(name, kind, bytes.length);
    if (bytes.length !== header.totalBytes) throw lengthError(name, kind, header, String(bytes.length));
  }
  return { dims: header.dims, data: bytes.subarray(header.headerBytes) };
}

/** Parses an IDX images buffer (count, rows, cols). */
export function parseIdxImages(input: Uint8Array, name = "IDX images"): IdxImages {
  const { dims, data } = parseIdx(input, "images", name);
  return { images: data, count: dims[0], rows: dims[1], cols: dims[2] };
}

/** Parses an IDX labels buffer; every label must be below numClasses. */
export function parseIdxLabels(input: Uint8Array, name = "IDX labels", numClasses = 10): IdxLabels {
  const { dims, data } = parseIdx(input, "labels", name);
  for (let i = 0; i < data.length; i++) {
    if (data[i] >= numClasses) {
      throw new Error(
        `${name}: expected labels in 0..${numClasses - 1} but found ${data[i]} at index ${i}; the file is corrupt`,
      );
    }
  }
  return { labels: data, count: dims[0] };
}

function readWhole(path: string): Uint8Array {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unknown error";
    throw new Error(`${basename(path)}: expected a readable file at ${path} but received ${code}`);
  }
  if (size > MAX_BYTES) {
    throw new Error(`${basename(path)}: expected a file of at most ${MAX_BYTES} bytes but found ${size}`);
  }
  const buf = readFileSync(path);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/** Reads an IDX images file, `.gz` or raw (detected by content, not by name). */
export function readIdxImages(path: string): IdxImages {
  return parseIdxImages(readWhole(path), basename(path));
}

/** Reads an IDX labels file, `.gz` or raw (detected by content, not by name). */
export function readIdxLabels(path: string, numClasses = 10): IdxLabels {
  return parseIdxLabels(readWhole(path), basename(path), numClasses);
}

/** Reads an images file and its labels file and checks that they describe the same examples. */
export function readIdxPair(imagesPath: string, labelsPath: string, numClasses = 10): IdxImages & IdxLabels {
  const images = readIdxImages(imagesPath);
  const labels = readIdxLabels(labelsPath, numClasses);
  if (images.count !== labels.count) {
    throw new Error(
      `${basename(labelsPath)}: expected ${images.count} labels to match the ${images.count} images in ` +
        `${basename(imagesPath)} but found ${labels.count}; the two files come from different sets or one is corrupt`,
    );
  }
  return { ...images, labels: labels.labels };
}

/** Encodes uint8 data as an IDX file: images when dims is [count, rows, cols], labels when [count]. */
export function encodeIdx(dims: readonly number[], data: Uint8Array): Uint8Array {
  if (dims.length !== 1 && dims.length !== 3) {
    throw new RangeError(`Expected 1 (labels) or 3 (images) dimensions but received ${dims.length}`);
  }
  const size = dims.reduce((a, b) => a * b, 1);
  if (data.length !== size) {
    throw new RangeError(
      `Expected ${size} bytes for dimensions [${dims.join(", ")}] but received ${data.length}`,
    );
  }
  const out = new Uint8Array(4 + 4 * dims.length + size);
  const view = new DataView(out.buffer);
  view.setUint32(0, dims.length === 1 ? MAGIC.labels : MAGIC.images);
  for (let i = 0; i < dims.length; i++) view.setUint32(4 + 4 * i, dims[i]);
  out.set(data, 4 + 4 * dims.length);
  return out;
}
