// A direct decoder for the PNGs a server sees most: 8 bits per sample, not interlaced, grey, grey + alpha,
// RGB or RGBA, without a palette or a transparent colour. It inflates the image data in one call and
// unfilters the rows straight into planar RGB floats, the numbers pngjs + rgbaToImage give, at a third of
// their time for a 32x32 image, or (decodePngFastGrey, for 1-channel models) into the luma plane toGrey
// would make of them, without the colour planes. Anything else (other depths and colour types,
// interlacing, tRNS, unknown critical chunks, a bad checksum or length, a truncated file) returns null,
// and the caller decodes it with pngjs, which gives its own answer and its own error messages.
import * as zlib from "node:zlib";
import type { GreyImage, RgbImage } from "./image.js";
import { luma } from "./luma.js";

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** CRC-32 (the PNG and zlib polynomial) of bytes[from, to), for a Node without zlib.crc32 (before 20.15). */
export function crc32Table(bytes: Uint8Array, from: number, to: number): number {
  let c = -1;
  for (let i = from; i < to; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

const crc32 =
  typeof zlib.crc32 === "function"
    ? (bytes: Uint8Array, from: number, to: number) => zlib.crc32(bytes.subarray(from, to))
    : crc32Table;

/** Samples per pixel of the colour types decoded here: 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA. */
const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 4: 2, 6: 4 };

const isCritical = (bytes: Uint8Array, at: number) => (bytes[at] & 0x20) === 0;
const typeIs = (bytes: Uint8Array, at: number, name: string) =>
  bytes[at] === name.charCodeAt(0) &&
  bytes[at + 1] === name.charCodeAt(1) &&
  bytes[at + 2] === name.charCodeAt(2) &&
  bytes[at + 3] === name.charCodeAt(3);

/** The inflated, unfiltered rows of a PNG this decoder takes (one byte per sample; each row after its filter byte). */
interface Rows {
  raw: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/** The rows, unfiltered in place, or null when this decoder does not take the file (see above). */
function decodeRows(bytes: Uint8Array, maxPixels: number): Rows | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Signature, then IHDR (13 bytes of data) first.
  if (bytes.length < 8 + 25 || view.getUint32(0) !== 0x89504e47 || view.getUint32(4) !== 0x0d0a1a0a)
    return null;
  if (view.getUint32(8) !== 13 || !typeIs(bytes, 12, "IHDR")) return null;
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  const channels = CHANNELS[bytes[25]];
  if (bytes[24] !== 8 || channels === undefined || bytes[26] !== 0 || bytes[27] !== 0 || bytes[28] !== 0)
    return null;
  if (width === 0 || height === 0 || width * height > maxPixels) return null;
  const parts: Uint8Array[] = [];
  let at = 8;
  let ended = false;
  while (at + 12 <= bytes.length) {
    const length = view.getUint32(at);
    const end = at + 12 + length;
    if (end > bytes.length || crc32(bytes, at + 4, at + 8 + length) !== view.getUint32(at + 8 + length))
      return null;
    const type = at + 4;
    if (typeIs(bytes, type, "IDAT")) parts.push(bytes.subarray(at + 8, at + 8 + length));
    else if (typeIs(bytes, type, "IEND")) {
      ended = true;
      break;
    } else if (typeIs(bytes, type, "tRNS")) return null;
    else if (at !== 8 && isCritical(bytes, type)) return null;
    at = end;
  }
  if (!ended || parts.length === 0) return null;
  const stride = width * channels;
  let raw: Buffer;
  try {
    raw = zlib.inflateSync(parts.length === 1 ? parts[0] : Buffer.concat(parts), {
      maxOutputLength: height * (stride + 1),
    });
  } catch {
    return null;
  }
  if (raw.length !== height * (stride + 1)) return null;
  for (let y = 0; y < height; y++) {
    const row = y * (stride + 1) + 1;
    if (!unfilterRow(raw, row, y === 0 ? -1 : row - stride - 1, stride, channels)) return null;
  }
  return { raw, width, height, channels };
}

/** The image, or null when this decoder does not take the file (see above); never throws. */
export function decodePngFast(bytes: Uint8Array, maxPixels: number): RgbImage | null {
  const rows = decodeRows(bytes, maxPixels);
  return rows && toPlanes(rows);
}

/**
 * The image's luma plane (height, width), the floats toGrey(decodePngFast(...)) gives bit for bit without
 * the three colour planes, or null as decodePngFast; never throws. What a 1-channel model takes.
 */
export function decodePngFastGrey(bytes: Uint8Array, maxPixels: number): GreyImage | null {
  const rows = decodeRows(bytes, maxPixels);
  return rows && toLuma(rows);
}

/**
 * Undoes row y's filter in place: each byte was stored minus a prediction from the byte `bpp` to its left
 * (a), the one above (b) and the one above that (c), zero outside the image. False for an unknown filter.
 */
function unfilterRow(raw: Uint8Array, row: number, prev: number, stride: number, bpp: number): boolean {
  const filter = raw[row - 1];
  if (filter === 0) return true;
  if (filter === 1) {
    for (let i = bpp; i < stride; i++) raw[row + i] += raw[row + i - bpp];
    return true;
  }
  if (filter > 4) return false;
  if (prev < 0) {
    // The first row: b = c = 0, so Up adds nothing, Average adds a / 2 and Paeth adds a.
    if (filter === 3) for (let i = bpp; i < stride; i++) raw[row + i] += raw[row + i - bpp] >> 1;
    else if (filter === 4) for (let i = bpp; i < stride; i++) raw[row + i] += raw[row + i - bpp];
    return true;
  }
  if (filter === 2) {
    for (let i = 0; i < stride; i++) raw[row + i] += raw[prev + i];
    return true;
  }
  if (filter === 3) {
    for (let i = 0; i < bpp; i++) raw[row + i] += raw[prev + i] >> 1;
    for (let i = bpp; i < stride; i++) raw[row + i] += (raw[row + i - bpp] + raw[prev + i]) >> 1;
    return true;
  }
  // Paeth: of a, b and c, the one closest to a + b - c (ties to a, then b); the first pixel has only b.
  for (let i = 0; i < bpp; i++) raw[row + i] += raw[prev + i];
  for (let i = bpp; i < stride; i++) {
    const a = raw[row + i - bpp];
    const b = raw[prev + i];
    const c = raw[prev + i - bpp];
    const pa = Math.abs(b - c);
    const pb = Math.abs(a - c);
    const pc = Math.abs(a + b - 2 * c);
    raw[row + i] += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
  }
  return true;
}

/** Float32 of v / 255 for each byte v: the colour of a pixel without alpha, as rgbaToImage stores it. */
const UNIT = Float32Array.from({ length: 256 }, (_, v) => v / 255);
let premultiplied: Float32Array | null = null;
/** Float32 of (v / 255) * (a / 255) at a * 256 + v: a colour over black, as rgbaToImage stores it. */
function overBlack(): Float32Array {
  if (!premultiplied) {
    premultiplied = new Float32Array(256 * 256);
    for (let a = 0; a < 256; a++)
      for (let v = 0; v < 256; v++) premultiplied[a * 256 + v] = (v / 255) * (a / 255);
  }
  return premultiplied;
}

/** The unfiltered rows as planar RGB, alpha composited over black as rgbaToImage does. */
function toPlanes({ raw, width, height, channels }: Rows): RgbImage {
  const stride = width * channels;
  const plane = width * height;
  const data = new Float32Array(3 * plane);
  const g = data.subarray(plane);
  const b = data.subarray(2 * plane);
  for (let y = 0; y < height; y++) {
    const row = y * (stride + 1) + 1;
    // The arithmetic of rgbaToImage: each colour / 255 times alpha / 255 (1 when there is no alpha).
    const o = y * width;
    if (channels === 1)
      for (let x = 0; x < width; x++) data[o + x] = g[o + x] = b[o + x] = raw[row + x] / 255;
    else if (channels === 2)
      for (let x = 0, p = row; x < width; x++, p += 2)
        data[o + x] = g[o + x] = b[o + x] = (raw[p] / 255) * (raw[p + 1] / 255);
    else if (channels === 3)
      for (let x = 0, p = row; x < width; x++, p += 3) {
        data[o + x] = raw[p] / 255;
        g[o + x] = raw[p + 1] / 255;
        b[o + x] = raw[p + 2] / 255;
      }
    else
      for (let x = 0, p = row; x < width; x++, p += 4) {
        const a = raw[p + 3] / 255;
        data[o + x] = (raw[p] / 255) * a;
        g[o + x] = (raw[p + 1] / 255) * a;
        b[o + x] = (raw[p + 2] / 255) * a;
      }
  }
  return { width, height, data };
}

/**
 * The unfiltered rows as one luma plane: toGrey's luma() of the float32 colours toPlanes would store,
 * looked up by byte instead of divided.
 */
function toLuma({ raw, width, height, channels }: Rows): GreyImage {
  const stride = width * channels;
  const data = new Float32Array(width * height);
  const t = channels === 2 || channels === 4 ? overBlack() : UNIT;
  for (let y = 0; y < height; y++) {
    const row = y * (stride + 1) + 1;
    const o = y * width;
    if (channels === 1)
      for (let x = 0; x < width; x++) {
        const v = t[raw[row + x]];
        data[o + x] = luma(v, v, v);
      }
    else if (channels === 2)
      for (let x = 0, p = row; x < width; x++, p += 2) {
        const v = t[raw[p + 1] * 256 + raw[p]];
        data[o + x] = luma(v, v, v);
      }
    else if (channels === 3)
      for (let x = 0, p = row; x < width; x++, p += 3)
        data[o + x] = luma(t[raw[p]], t[raw[p + 1]], t[raw[p + 2]]);
    else
      for (let x = 0, p = row; x < width; x++, p += 4) {
        const a = raw[p + 3] * 256;
        data[o + x] = luma(t[a + raw[p]], t[a + raw[p + 1]], t[a + raw[p + 2]]);
      }
  }
  return { width, height, data };
}
