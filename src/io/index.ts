// File formats: safetensors, atomic writes, images.
export { writeFileAtomic } from "./atomic.js";
export * from "./image.js";
export {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
} from "./safetensors.js";
