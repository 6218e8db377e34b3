// safetensors read/write over plain data (no Tensor class): the format PyTorch, Hugging Face and
// friends use to move weights without pickle.
//
// Layout: u64 little-endian N | N bytes of UTF-8 JSON header | data section.
// Header: { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] }, ...,
//           "__metadata__": { "<key>": "<string>" } }   with offsets relative to the data section.
//
// Loading treats the file as hostile: every size the header claims is checked against the bytes that
// are really there before anything is allocated, so the largest allocation is bounded by the file size.
// All dtypes are converted to F32 on load. Integer dtypes (I64 is what PyTorch's BatchNorm uses for
// `num_batches_tracked`) become F32 too, exact up to 2^24 in magnitude; `sourceDtype` says what the file
// held. Writing produces F32, or I64 for entries that ask for it (values rounded to the nearest integer).
import fs from "node:fs";
import { writeFileAtomic } from "./atomic.js";

export type DType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8";

export interface TensorEntry {
  dtype: "F32";
  shape: number[];
  data: Float32Array;
  /** The dtype stored in the file, before conversion to F32. */
  sourceDtype: DType;
}

export interface SafetensorsInput {
  shape: readonly number[];
  data: Float32Array;
  /** Storage dtype; "I64" rounds each value to the nearest integer (BatchNorm's num_batches_tracked). */
  dtype?: "F32" | "I64";
}

export interface SafetensorsContents {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

export interface DecodeOptions {
  /** Upper bound on the JSON header, checked before the header is read. Default 100 MB. */
  maxHeaderBytes?: number;
}

export const MAX_HEADER_BYTES = 100_000_000;

/** Thrown for every malformed file; the message names the file, the tensor and what was expected. */
export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

const ITEM_SIZE: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
};
const DTYPES = Object.keys(ITEM_SIZE) as DType[];
const TENSOR_FIELDS = ["dtype", "shape", "data_offsets"];
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---------------------------------------------------------------------------------------------------
// Decoding

export function decodeSafetensors(
  bytes: Uint8Array,
  source?: string,
  options: DecodeOptions = {},
): SafetensorsContents {
  const fail = (message: string): never => {
    const where = source === undefined ? "Invalid safetensors data" : `Invalid safetensors file "${source}"`;
    throw new SafetensorsError(`${where}: ${message}`);
  };
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Expected a Uint8Array but received ${Object.prototype.toString.call(bytes)}`);
  }
  const maxHeader = options.maxHeaderBytes ?? MAX_HEADER_BYTES;
  if (!Number.isSafeInteger(maxHeader) || maxHeader < 0) {
    throw new RangeError(`Expected maxHeaderBytes to be a non-negative integer but received ${maxHeader}`);
  }
  if (bytes.byteLength < 8) {
    fail(
      `Expected at least 8 bytes (the header length) but received ${bytes.byteLength}; the file is truncated`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const claimed = view.getBigUint64(0, true);
  if (claimed > BigInt(maxHeader)) {
    fail(
      `Expected a header length of at most ${maxHeader} bytes but received ${claimed}; the file is corrupt`,
    );
  }
  const headerLength = Number(claimed);
  if (headerLength > bytes.byteLength - 8) {
    fail(
      `Expected a header length of at most ${bytes.byteLength - 8} bytes (the rest of the file) ` +
        `but received ${headerLength}; the file is truncated`,
    );
  }
  if (headerLength < 2)
    fail(`Expected a header length of at least 2 bytes ("{}") but received ${headerLength}`);

  let text = "";
  try {
    // ignoreBOM keeps a byte-order mark in the text, so it fails the '{' check below as the spec asks.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      bytes.subarray(8, 8 + headerLength),
    );
  } catch {
    fail("Expected the header to be valid UTF-8 but it is not");
  }
  if (text[0] !== "{") fail(`Expected the header to start with "{" but received ${JSON.stringify(text[0])}`);
  const structure = checkHeaderStructure(text);
  if (structure.tooDeep !== undefined) fail(structure.tooDeep);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    fail(`Expected the header to be valid JSON but parsing failed: ${(error as Error).message}`);
  }
  if (structure.duplicate !== undefined) fail(structure.duplicate);

  const dataStart = 8 + headerLength;
  const dataLength = bytes.byteLength - dataStart;
  const metadata = parseMetadata((header as Record<string, unknown>).__metadata__, fail);
  const infos: TensorInfo[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name !== "__metadata__") infos.push(parseTensorInfo(name, value, dataLength, fail));
  }
  checkCoverage(infos, dataLength, fail);

  const tensors = new Map<string, TensorEntry>();
  for (const info of infos) {
    const raw = bytes.subarray(dataStart + info.begin, dataStart + info.end);
    tensors.set(info.name, {
      dtype: "F32",
      shape: info.shape,
      data: toFloat32(raw, info.dtype),
      sourceDtype: info.dtype,
    });
  }
  return { tensors, metadata };
}

interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

type Fail = (message: string) => never;

function parseMetadata(value: unknown, fail: Fail): Record<string, string> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) {
    fail(`Expected __metadata__ to be an object of strings but received ${describe(value)}`);
  }
  const entries = Object.entries(value as Record<string, unknown>);
  for (const [key, item] of entries) {
    if (typeof item !== "string") {
      fail(`Expected __metadata__[${JSON.stringify(key)}] to be a string but received ${describe(item)}`);
    }
  }
  // fromEntries defines own properties, so a key named "__proto__" stays data, not a prototype change.
  return Object.fromEntries(entries) as Record<string, string>;
}

function parseTensorInfo(name: string, value: unknown, dataLength: number, fail: Fail): TensorInfo {
  const what = `tensor ${JSON.stringify(name)}`;
  if (!isPlainObject(value)) {
    fail(`Expected ${what} to be an object {dtype, shape, data_offsets} but received ${describe(value)}`);
  }
  const entry = value as Record<string, unknown>;
  for (const field of Object.keys(entry)) {
    if (!TENSOR_FIELDS.includes(field)) {
      fail(
        `Expected ${what} to have only dtype, shape and data_offsets but received field ${JSON.stringify(field)}`,
      );
    }
  }
  const dtype = entry.dtype;
  if (typeof dtype !== "string" || !Object.hasOwn(ITEM_SIZE, dtype)) {
    fail(
      `Expected ${what} dtype to be one of ${DTYPES.join(", ")} but received ${describe(dtype)}` +
        " (BOOL and float8 dtypes are not supported)",
    );
  }
  const shape = entry.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(`Expected ${what} shape to be an array of non-negative integers but received ${describe(shape)}`);
  }
  const offsets = entry.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    fail(
      `Expected ${what} data_offsets to be [begin, end] with 0 <= begin <= end but received ${describe(offsets)}`,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataLength) {
    fail(
      `Expected ${what} data_offsets to lie within the ${dataLength}-byte data section ` +
        `but received [${begin}, ${end}]`,
    );
  }
  const itemSize = ITEM_SIZE[dtype as DType];
  // BigInt: a hostile shape like [2^40, 2^40] must not round to a plausible byte count.
  const expected = (shape as number[]).reduce((n, d) => n * BigInt(d), 1n) * BigInt(itemSize);
  if (expected !== BigInt(end - begin)) {
    fail(
      `Expected ${what} to span ${expected} bytes (shape ${formatShape(shape as number[])} of ${dtype}, ` +
        `${itemSize} bytes each) but data_offsets [${begin}, ${end}] span ${end - begin} bytes`,
    );
  }
  return { name, dtype: dtype as DType, shape: [...(shape as number[])], begin, end };
}

/** Sorts by offset (file order) and checks the tensors tile the data section: no overlap, no hole. */
function checkCoverage(infos: TensorInfo[], dataLength: number, fail: Fail): void {
  infos.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let position = 0;
  let previous: TensorInfo | undefined;
  for (const info of infos) {
    const what = `tensor ${JSON.stringify(info.name)} data_offsets [${info.begin}, ${info.end}]`;
    if (info.begin < position && previous !== undefined) {
      fail(
        `Expected ${what} not to overlap tensor ${JSON.stringify(previous.name)} ` +
          `[${previous.begin}, ${previous.end}]`,
      );
    }
    if (info.begin > position) {
      const after =
        previous === undefined ? "the start of the data section" : `tensor ${JSON.stringify(previous.name)}`;
      fail(
        `Expected ${what} to begin at ${position}, right after ${after}, ` +
          `but it leaves a hole of ${info.begin - position} bytes`,
      );
    }
    position = info.end;
    previous = info;
  }
  if (position !== dataLength) {
    fail(
      `Expected the tensors to cover the ${dataLength}-byte data section but they end at ${position}, ` +
        `leaving ${dataLength - position} unused bytes`,
    );
  }
}

function toFloat32(raw: Uint8Array, dtype: DType): Float32Array {
  const count = raw.byteLength / ITEM_SIZE[dtype];
  const out = new Float32Array(count);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case "F32":
      if (LITTLE_ENDIAN_HOST) new Uint8Array(out.buffer).set(raw);
      else for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case "F16": {
      const table = halfTable();
      for (let i = 0; i < count; i++) out[i] = table[raw[2 * i] | (raw[2 * i + 1] << 8)];
      break;
    }
    case "BF16": {
      // bfloat16 is the top half of a float32: shift its bits back into place.
      const bits = new Uint32Array(out.buffer);
      // Both views of `out` use the host's byte order, so this is right on any host.
      for (let i = 0; i < count; i++) bits[i] = ((raw[2 * i] | (raw[2 * i + 1] << 8)) << 16) >>> 0;
      break;
    }
    case "F64":
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      break;
    case "I64":
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(8 * i, true));
      break;
    case "U64":
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigUint64(8 * i, true));
      break;
    case "I32":
      for (let i = 0; i < count; i++) out[i] = view.getInt32(4 * i, true);
      break;
    case "U32":
      for (let i = 0; i < count; i++) out[i] = view.getUint32(4 * i, true);
      break;
    case "I16":
      for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true);
      break;
    case "U16":
      for (let i = 0; i < count; i++) out[i] = view.getUint16(2 * i, true);
      break;
    case "I8":
      for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
      break;
    case "U8":
      out.set(raw);
      break;
  }
  return out;
}

let halfToFloat: Float32Array | undefined;

/** All 65536 IEEE half-precision values as float32, built once (256 KB) on the first F16 load. */
function halfTable(): Float32Array {
  if (halfToFloat !== undefined) return halfToFloat;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0)
      table[h] = sign * fraction * 2 ** -24; // zero and subnormals
    else if (exponent === 31) table[h] = fraction === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
    else table[h] = sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }
  halfToFloat = table;
  return table;
}

// ---------------------------------------------------------------------------------------------------
// Encoding

/** Serialises tensors in the map's order, with contiguous offsets and the header space-padded to 8 bytes. */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, SafetensorsInput>,
  metadata?: Record<string, string>,
): Uint8Array {
  if (!(tensors instanceof Map)) {
    throw new TypeError(
      `Expected tensors to be a Map of name -> {shape, data} but received ${describe(tensors)}`,
    );
  }
  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) {
      throw new TypeError(`Expected metadata to be an object of strings but received ${describe(metadata)}`);
    }
    const items = Object.entries(metadata).map(([key, value]) => {
      if (typeof value !== "string") {
        throw new TypeError(
          `Expected metadata[${JSON.stringify(key)}] to be a string but received ${describe(value)}`,
        );
      }
      return `${JSON.stringify(key)}:${JSON.stringify(value)}`;
    });
    parts.push(`"__metadata__":{${items.join(",")}}`);
  }
  let offset = 0;
  const layout: { entry: SafetensorsInput; begin: number }[] = [];
  for (const [name, entry] of tensors) {
    const dtype = checkInput(name, entry);
    const begin = offset;
    offset += entry.data.length * ITEM_SIZE[dtype];
    layout.push({ entry, begin });
    // Built by hand rather than JSON.stringify(object) so integer-like names keep the map's order.
    const info = JSON.stringify({ dtype, shape: [...entry.shape], data_offsets: [begin, offset] });
    parts.push(`${JSON.stringify(name)}:${info}`);
  }
  let header = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(header.byteLength / 8) * 8;
  if (padded !== header.byteLength) {
    const withPadding = new Uint8Array(padded).fill(0x20);
    withPadding.set(header);
    header = withPadding;
  }
  const out = new Uint8Array(8 + padded + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(padded), true);
  out.set(header, 8);
  const dataStart = 8 + padded;
  for (const { entry, begin } of layout) {
    const at = dataStart + begin;
    const data = entry.data;
    if ((entry.dtype ?? "F32") === "I64") {
      for (let i = 0; i < data.length; i++) view.setBigInt64(at + 8 * i, BigInt(Math.round(data[i])), true);
    } else if (LITTLE_ENDIAN_HOST) {
      out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    } else {
      for (let i = 0; i < data.length; i++) view.setFloat32(at + 4 * i, data[i], true);
    }
  }
  return out;
}

function checkInput(name: string, entry: SafetensorsInput): "F32" | "I64" {
  const what = `tensor ${JSON.stringify(name)}`;
  if (name === "__metadata__") {
    throw new RangeError(
      `Expected a tensor name other than "__metadata__" (reserved for metadata) but received it`,
    );
  }
  if (entry === null || typeof entry !== "object" || !(entry.data instanceof Float32Array)) {
    throw new TypeError(`Expected ${what} data to be a Float32Array but received ${describe(entry?.data)}`);
  }
  const dtype = entry.dtype ?? "F32";
  if (dtype !== "F32" && dtype !== "I64") {
    throw new RangeError(`Expected ${what} dtype to be "F32" or "I64" but received ${describe(dtype)}`);
  }
  const shape = entry.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new RangeError(
      `Expected ${what} shape to be an array of non-negative integers but received ${describe(shape)}`,
    );
  }
  const numel = shape.reduce((n, d) => n * d, 1);
  if (numel !== entry.data.length) {
    throw new RangeError(
      `Expected ${what} data of length ${numel} (shape ${formatShape(shape)}) but received ${entry.data.length}`,
    );
  }
  if (dtype === "I64") {
    for (let i = 0; i < entry.data.length; i++) {
      if (!Number.isFinite(entry.data[i])) {
        throw new RangeError(
          `Expected finite values for I64 ${what} but received ${entry.data[i]} at index ${i}`,
        );
      }
    }
  }
  return dtype;
}

// ---------------------------------------------------------------------------------------------------
// Files

/** Reads and strictly validates a safetensors file; errors name the file. */
export function readSafetensors(file: string, options?: DecodeOptions): SafetensorsContents {
  return decodeSafetensors(fs.readFileSync(file), file, options);
}

/** Encodes and writes atomically: a crash leaves either the old file or the complete new one. */
export function writeSafetensors(
  file: string,
  tensors: ReadonlyMap<string, SafetensorsInput>,
  metadata?: Record<string, string>,
): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

// ---------------------------------------------------------------------------------------------------
// Header structure: what JSON.parse cannot tell us

/** A legitimate header nests 3 deep (header > tensor > shape); anything far deeper is hostile. */
export const MAX_JSON_DEPTH = 8;

interface Structure {
  tooDeep?: string;
  duplicate?: string;
}

/**
 * One linear pass over the raw header text that (1) rejects deep nesting before JSON.parse ever sees
 * it and (2) finds duplicate keys, which JSON.parse silently resolves to the last one. Malformed JSON
 * is left for JSON.parse to report, so this scanner only needs to be right on valid input.
 */
function checkHeaderStructure(text: string): Structure {
  const stack: { keys: Set<string> | null; name: string | undefined }[] = [];
  let lastKey: string | undefined;
  let duplicate: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) {
        if (text.charCodeAt(i) === 0x5c /* \\ */) i++;
      }
      let next = i + 1;
      while (isJsonSpace(text.charCodeAt(next))) next++;
      const frame = stack[stack.length - 1];
      if (text[next] !== ":" || frame?.keys == null) continue;
      let key: string;
      try {
        key = JSON.parse(text.slice(start, i + 1)) as string; // decodes escapes: "a" equals "\u0061"
      } catch {
        continue;
      }
      if (frame.keys.has(key) && duplicate === undefined) {
        const where = frame.name === undefined ? "at the top level" : `inside ${JSON.stringify(frame.name)}`;
        duplicate = `Expected unique keys in the header but ${JSON.stringify(key)} appears twice ${where}`;
      }
      frame.keys.add(key);
      lastKey = key;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (stack.length === MAX_JSON_DEPTH) {
        return {
          tooDeep: `Expected the header JSON to nest at most ${MAX_JSON_DEPTH} levels deep but received deeper nesting at character ${i}`,
        };
      }
      const parent = stack[stack.length - 1];
      stack.push({ keys: c === 0x7b ? new Set() : null, name: parent?.keys ? lastKey : parent?.name });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      if (stack.pop() === undefined) break; // unbalanced: JSON.parse will say so
    }
  }
  return { duplicate };
}

// ---------------------------------------------------------------------------------------------------
// Helpers

function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function isPlainObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** A short, safe rendering of a received value for error messages. */
function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return "a function";
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  if (ArrayBuffer.isView(value)) text = Object.prototype.toString.call(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
