// Images for `vgg predict`: PNG (pngjs) and JPEG (jpeg-js) decoding to planar RGB floats in [0, 1],
// and the two preprocessing pipelines: Fashion-MNIST style (grey, resized) and ImageNet's
// (shorter side to 256, centre crop 224, mean/std normalisation).
import { readFileSync } from "node:fs";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";
import { resizeBilinear } from "../data/transforms.js";
import { luma } from "./luma.js";
import { decodePngFast, decodePngFastGrey } from "./png-fast.js";

/** Refuse decoding anything larger: 50 megapixels is 600 MB of float RGB. */
export const MAX_PIXELS = 50_000_000;

export interface RgbImage {
  width: number;
  height: number;
  /** (3, height, width), values in [0, 1]. */
  data: Float32Array;
}

export interface GreyImage {
  width: number;
  height: number;
  /** (height, width): ITU-R 601 luma in [0, 1], as toGrey gives. */
  data: Float32Array;
}

/** RGBA bytes (as decoders and canvases return them) to planar RGB in [0, 1], transparent areas over black. */
export function rgbaToImage(rgba: Uint8Array | Uint8ClampedArray, width: number, height: number): RgbImage {
  const plane = width * height;
  const data = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    // Transparent pixels are composited over black, the Fashion-MNIST background.
    const a = rgba[4 * i + 3] / 255;
    for (let c = 0; c < 3; c++) data[c * plane + i] = (rgba[4 * i + c] / 255) * a;
  }
  return { width, height, data };
}

const isPngSignature = (bytes: Uint8Array) =>
  bytes.length > 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;

export function decodeImage(bytes: Uint8Array, name = "image"): RgbImage {
  if (bytes.length === 0) throw new Error(`${name}: the file is empty; expected a PNG or JPEG image`);
  const isPng = isPngSignature(bytes);
  const isJpeg = bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  if (!isPng && !isJpeg) throw new Error(`${name}: not a PNG or JPEG image (unrecognised file signature)`);
  try {
    if (isPng) {
      // Check the declared size before pngjs allocates for it. A zero side must be refused too: 0 x 2^32-1
      // passes the product check, yet pngjs allocates per declared row (4 GB).
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (bytes.length >= 24) {
        const width = view.getUint32(16);
        const height = view.getUint32(20);
        if (width === 0 || height === 0)
          throw new Error(
            `expected a width and height of at least 1 pixel but the header declares ${width}x${height}`,
          );
        if (width * height > MAX_PIXELS)
          throw new Error(`the image is ${width}x${height}, more than ${MAX_PIXELS / 1e6} megapixels`);
      }
      // The common 8-bit kinds directly; pngjs for the rest, and for every file the fast path refuses.
      const fast = decodePngFast(bytes, MAX_PIXELS);
      if (fast) return fast;
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return rgbaToImage(png.data, png.width, png.height);
    }
    const img = jpeg.decode(bytes, {
      useTArray: true,
      formatAsRGBA: true,
      maxResolutionInMP: MAX_PIXELS / 1e6,
      maxMemoryUsageInMB: 1024,
    });
    return rgbaToImage(img.data, img.width, img.height);
  } catch (e) {
    throw new Error(`${name}: cannot decode the ${isPng ? "PNG" : "JPEG"} image: ${(e as Error).message}`);
  }
}

export function readImage(path: string): RgbImage {
  return decodeImage(readFileSync(path), path);
}

/**
 * The image as one luma plane, toGrey(decodeImage(bytes)) bit for bit (and the same errors): the common
 * PNGs straight from their bytes, without the three colour planes (what a 1-channel model needs).
 */
export function decodeImageGrey(bytes: Uint8Array, name = "image"): GreyImage {
  const fast = isPngSignature(bytes) ? decodePngFastGrey(bytes, MAX_PIXELS) : null;
  if (fast) return fast;
  const img = decodeImage(bytes, name);
  return { width: img.width, height: img.height, data: toGrey(img) };
}

/** ITU-R 601 luma (luma.ts), as PIL's convert("L"). */
export function toGrey(img: RgbImage): Float32Array {
  const plane = img.width * img.height;
  const out = new Float32Array(plane);
  for (let i = 0; i < plane; i++) out[i] = luma(img.data[i], img.data[plane + i], img.data[2 * plane + i]);
  return out;
}

/**
 * Fashion-MNIST style input (1 or 3, size, size): grey (or RGB) resized to size x size. Fashion-MNIST
 * shows light items on black; `invert` turns a dark-on-light photo into that form.
 */
export function preprocessSmall(img: RgbImage, channels: number, size: number, invert = false): Float32Array {
  if (channels === 1)
    return preprocessGrey({ width: img.width, height: img.height, data: toGrey(img) }, size, invert);
  return resized(img.data, 3, img.height, img.width, size, invert, true);
}

/**
 * preprocessSmall's 1-channel input from the luma plane (decodeImageGrey's); img.data itself when it is
 * already size x size and not inverted.
 */
export function preprocessGrey(img: GreyImage, size: number, invert = false): Float32Array {
  return resized(img.data, 1, img.height, img.width, size, invert, invert);
}

/** n planes resized to size x size, then inverted if asked; at that size already, `planes` or (copy) a copy. */
function resized(
  planes: Float32Array,
  n: number,
  h: number,
  w: number,
  size: number,
  invert: boolean,
  copy: boolean,
): Float32Array {
  // At the model's size already: the resize would multiply by 1 and add 0 (the same floats).
  const same = h === size && w === size;
  const out = same ? (copy ? planes.slice() : planes) : resizeBilinear(planes, n, h, w, size, size);
  if (invert) for (let i = 0; i < out.length; i++) out[i] = 1 - out[i];
  return out;
}

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

/** torchvision's ImageNet evaluation transform: resize shorter side to 256, centre crop 224, normalise. */
export function preprocessImagenet(img: RgbImage, resize = 256, crop = 224): Float32Array {
  const scale = resize / Math.min(img.width, img.height);
  const w = Math.max(crop, Math.round(img.width * scale));
  const h = Math.max(crop, Math.round(img.height * scale));
  const resized = resizeBilinear(img.data, 3, img.height, img.width, h, w);
  const top = Math.round((h - crop) / 2);
  const left = Math.round((w - crop) / 2);
  const out = new Float32Array(3 * crop * crop);
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < crop; y++)
      for (let x = 0; x < crop; x++)
        out[(c * crop + y) * crop + x] =
          (resized[(c * h + y + top) * w + x + left] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
  return out;
}
