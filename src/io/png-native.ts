// The native addon's PNG decoder (native/png.cc) where the addon loads: the floats of png-fast.ts bit for bit,
// in about half the time (one zlib stream and no JavaScript loops), for the server's HTTP thread. Node only;
// the browser build keeps png-fast.ts.
import { loadNativeAddon, type NativeAddon } from "../backend/native.js";
import type { GreyImage, RgbImage } from "./image.js";

let addon: NativeAddon | null | undefined;

function native(): NativeAddon | null {
  if (addon === undefined) {
    let loaded: NativeAddon | Error;
    try {
      loaded = loadNativeAddon();
    } catch (e) {
      // A VGG_NATIVE_ISA the CPU lacks is for the kernels to report; decoding falls back to JavaScript.
      loaded = e as Error;
    }
    addon = loaded instanceof Error ? null : loaded;
  }
  return addon;
}

const size = (bytes: Uint8Array) => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { width: view.getUint32(16), height: view.getUint32(20) };
};

/** decodePngFastGrey's image, or null when it would return null or the addon is not there. */
export function decodePngNativeGrey(bytes: Uint8Array, maxPixels: number): GreyImage | null {
  const data = native()?.decodePng(bytes, maxPixels, true);
  return data ? { ...size(bytes), data } : null;
}

/** decodePngFast's image, or null when it would return null or the addon is not there. */
export function decodePngNative(bytes: Uint8Array, maxPixels: number): RgbImage | null {
  const data = native()?.decodePng(bytes, maxPixels, false);
  return data ? { ...size(bytes), data } : null;
}
