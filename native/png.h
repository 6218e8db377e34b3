// PNG decoding for the inference server's hot path: the files src/io/png-fast.ts takes (8-bit grey, grey +
// alpha, RGB, RGBA; no palette, no transparent colour, not interlaced), to the same floats bit for bit.
// Inflating uses the zlib that Node.js itself exports to addons, so nothing is linked from the system.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace vgg {

// What png_probe found of a file.
struct PngInfo {
  uint32_t width = 0, height = 0;
  int channels = 0;
  // The image data: each IDAT chunk's (offset, length) in the file, in order.
  std::vector<std::pair<size_t, size_t>> idat;
};

// Whether png_decode takes the file, by every check made before inflating (signature, IHDR first, each
// chunk's CRC, IDAT present, IEND, no chunk refused, at most max_pixels), and what it found.
bool png_probe(const uint8_t* bytes, size_t n, double max_pixels, PngInfo* info);

// Decodes into out, reading only the IDAT spans png_probe found: grey, the luma plane (height, width); else
// the planes R, G, B (3, height, width), alpha composited over black. out holds (grey ? 1 : 3) * width *
// height floats, allocated by the caller from the probe's info. False (out untouched or partly written)
// when the file does not decode (a bad stream, the wrong number of rows, an unknown row filter).
bool png_decode(const uint8_t* bytes, const PngInfo& info, bool grey, float* out);

}  // namespace vgg
