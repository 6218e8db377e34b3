// PNG decoding to float planes (png.h): src/io/png-fast.ts's rules and arithmetic, in C++ for the server's
// HTTP thread, where the JavaScript decoder's zlib call and loops were a third of a request's cost.
#include "png.h"

#include <zlib.h>

#include <cstdlib>
#include <cstring>

// The floats must be png-fast.ts's bit for bit: each product and sum rounded on its own, never fused.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace vgg {
namespace {

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool type_is(const uint8_t* p, const char* name) { return std::memcmp(p, name, 4) == 0; }

// Samples per pixel of the colour types taken: 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA; 0 for the others.
int channels_of(uint8_t colour_type) {
  switch (colour_type) {
    case 0: return 1;
    case 2: return 3;
    case 4: return 2;
    case 6: return 4;
    default: return 0;
  }
}

// The tables of png-fast.ts: UNIT[v] = float(v / 255), OVER[a * 256 + v] = float((v / 255) * (a / 255)),
// each computed in double and rounded once to float, as a Float32Array stores them.
struct Tables {
  float unit[256];
  float over[256 * 256];
  Tables() {
    for (int v = 0; v < 256; v++) unit[v] = static_cast<float>(v / 255.0);
    for (int a = 0; a < 256; a++)
      for (int v = 0; v < 256; v++) over[a * 256 + v] = static_cast<float>((v / 255.0) * (a / 255.0));
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

// luma.ts: 0.299 R + 0.587 G + 0.114 B in double, left to right, rounded once to float.
float luma(double r, double g, double b) { return static_cast<float>(0.299 * r + 0.587 * g + 0.114 * b); }

// Inflates the zlib stream split over the IDAT chunks into raw, which holds size + 1 bytes: true when it gives
// exactly size. False for a bad stream, one that ends short, or one that gives more (zlib.inflateSync with
// maxOutputLength: size refuses those); bytes after the stream's end are ignored, as there.
bool inflate_exactly(const uint8_t* bytes, const PngInfo& info, uint8_t* raw, size_t size) {
  z_stream z;
  std::memset(&z, 0, sizeof z);
  if (inflateInit(&z) != Z_OK) return false;
  z.next_out = raw;
  z.avail_out = static_cast<uInt>(size + 1);
  int status = Z_OK;
  for (const auto& [offset, length] : info.idat) {
    z.next_in = const_cast<Bytef*>(bytes + offset);
    z.avail_in = static_cast<uInt>(length);
    // Z_BUF_ERROR (no room left: more than size) and every error end the loop.
    while (z.avail_in > 0 && status == Z_OK) status = inflate(&z, Z_NO_FLUSH);
    if (status != Z_OK) break;
  }
  const bool ok = status == Z_STREAM_END && z.total_out == size;
  inflateEnd(&z);
  return ok;
}

// Undoes one row's filter in place (png-fast.ts unfilterRow): row and prev point at the row's first sample
// (after its filter byte) and the previous row's (null for the first row).
bool unfilter_row(uint8_t filter, uint8_t* row, const uint8_t* prev, size_t stride, size_t bpp) {
  if (filter == 0) return true;
  if (filter == 1) {
    for (size_t i = bpp; i < stride; i++) row[i] = static_cast<uint8_t>(row[i] + row[i - bpp]);
    return true;
  }
  if (filter > 4) return false;
  if (prev == nullptr) {
    // The first row: b = c = 0, so Up adds nothing, Average adds a / 2 and Paeth adds a.
    if (filter == 3)
      for (size_t i = bpp; i < stride; i++) row[i] = static_cast<uint8_t>(row[i] + (row[i - bpp] >> 1));
    else if (filter == 4)
      for (size_t i = bpp; i < stride; i++) row[i] = static_cast<uint8_t>(row[i] + row[i - bpp]);
    return true;
  }
  if (filter == 2) {
    for (size_t i = 0; i < stride; i++) row[i] = static_cast<uint8_t>(row[i] + prev[i]);
    return true;
  }
  if (filter == 3) {
    for (size_t i = 0; i < bpp; i++) row[i] = static_cast<uint8_t>(row[i] + (prev[i] >> 1));
    for (size_t i = bpp; i < stride; i++) row[i] = static_cast<uint8_t>(row[i] + ((row[i - bpp] + prev[i]) >> 1));
    return true;
  }
  // Paeth: of a, b and c, the one closest to a + b - c (ties to a, then b); the first pixel has only b.
  for (size_t i = 0; i < bpp; i++) row[i] = static_cast<uint8_t>(row[i] + prev[i]);
  for (size_t i = bpp; i < stride; i++) {
    const int a = row[i - bpp], b = prev[i], c = prev[i - bpp];
    const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
    row[i] = static_cast<uint8_t>(row[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c));
  }
  return true;
}

}  // namespace

bool png_probe(const uint8_t* bytes, size_t n, double max_pixels, PngInfo* info) {
  static const uint8_t kSignature[8] = {0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a};
  if (n < 8 + 25 || std::memcmp(bytes, kSignature, 8) != 0) return false;
  if (be32(bytes + 8) != 13 || !type_is(bytes + 12, "IHDR")) return false;
  info->width = be32(bytes + 16);
  info->height = be32(bytes + 20);
  info->channels = channels_of(bytes[25]);
  if (bytes[24] != 8 || info->channels == 0 || bytes[26] != 0 || bytes[27] != 0 || bytes[28] != 0) return false;
  if (info->width == 0 || info->height == 0 ||
      static_cast<double>(info->width) * static_cast<double>(info->height) > max_pixels)
    return false;
  info->idat.clear();
  bool ended = false;
  for (size_t at = 8; at + 12 <= n;) {
    const size_t length = be32(bytes + at);
    if (length > n - at - 12) return false;
    const size_t end = at + 12 + length;
    if (crc32(crc32(0L, Z_NULL, 0), bytes + at + 4, static_cast<uInt>(length + 4)) != be32(bytes + at + 8 + length))
      return false;
    const uint8_t* type = bytes + at + 4;
    if (type_is(type, "IDAT")) {
      info->idat.emplace_back(at + 8, length);
    } else if (type_is(type, "IEND")) {
      ended = true;
      break;
    } else if (type_is(type, "tRNS")) {
      return false;
    } else if (at != 8 && (type[0] & 0x20) == 0) {
      return false;  // a critical chunk other than IHDR, IDAT and IEND (PLTE, or one unknown)
    }
    at = end;
  }
  return ended && !info->idat.empty();
}

bool png_decode(const uint8_t* bytes, const PngInfo& info, bool grey, float* out) {
  const size_t width = info.width, height = info.height, channels = static_cast<size_t>(info.channels);
  const size_t stride = width * channels;
  const size_t size = height * (stride + 1);
  if (size >= 0xffffffffu) return false;  // beyond zlib's 32-bit counts (far beyond MAX_PIXELS)
  uint8_t* raw = static_cast<uint8_t*>(std::malloc(size + 1));
  if (raw == nullptr) return false;
  bool ok = inflate_exactly(bytes, info, raw, size);
  for (size_t y = 0; ok && y < height; y++) {
    uint8_t* row = raw + y * (stride + 1) + 1;
    ok = unfilter_row(row[-1], row, y == 0 ? nullptr : row - stride - 1, stride, channels);
  }
  if (ok) {
    const Tables& t = tables();
    const size_t plane = width * height;
    for (size_t y = 0; y < height; y++) {
      const uint8_t* p = raw + y * (stride + 1) + 1;
      float* o = out + y * width;
      if (grey) {
        // png-fast.ts toLuma: luma() of the float colours toPlanes stores, looked up by byte.
        for (size_t x = 0; x < width; x++, p += channels) {
          if (channels == 1) {
            const float v = t.unit[p[0]];
            o[x] = luma(v, v, v);
          } else if (channels == 2) {
            const float v = t.over[p[1] * 256 + p[0]];
            o[x] = luma(v, v, v);
          } else if (channels == 3) {
            o[x] = luma(t.unit[p[0]], t.unit[p[1]], t.unit[p[2]]);
          } else {
            const float* a = t.over + p[3] * 256;
            o[x] = luma(a[p[0]], a[p[1]], a[p[2]]);
          }
        }
      } else {
        // png-fast.ts toPlanes: each colour / 255 times alpha / 255 (1 without alpha), as rgbaToImage.
        float* g = o + plane;
        float* b = o + 2 * plane;
        for (size_t x = 0; x < width; x++, p += channels) {
          if (channels == 1) {
            o[x] = g[x] = b[x] = t.unit[p[0]];
          } else if (channels == 2) {
            o[x] = g[x] = b[x] = t.over[p[1] * 256 + p[0]];
          } else if (channels == 3) {
            o[x] = t.unit[p[0]];
            g[x] = t.unit[p[1]];
            b[x] = t.unit[p[2]];
          } else {
            const float* a = t.over + p[3] * 256;
            o[x] = a[p[0]];
            g[x] = a[p[1]];
            b[x] = a[p[2]];
          }
        }
      }
    }
  }
  std::free(raw);
  return ok;
}

}  // namespace vgg
