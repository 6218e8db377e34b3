// Convolutions under bf16 autocast (bf16.h) as implicit GEMMs on the bf16 GEMM's kernels (AMX tiles,
// VDPBF16PS or the emulation): the im2col matrix is never stored; the GEMM's operand panels are filled
// from a rounded copy of the input as they are needed, and the products are summed in float32.
//
//   forward:         y (cOut, P) = w' (cOut, K) cols (K, P) over a group of images at once (P = the group's
//                    output pixels), then bias and ReLU. k runs over (tap, channel): the input is copied
//                    once into bf16 pair words of two channels at each padded pixel, so a row of a packed
//                    panel is a shifted run of that copy, and w' is w reordered to match.
//   input gradient:  for stride 1 the adjoint is itself a convolution: of dy with the weights transposed
//                    (cIn, cOut, kh, kw) and flipped, padded kh - 1 - pad, so it runs as the forward does.
//   weight gradient: dw (cOut, K) = sum over images of dy (cOut, P) cols^T (P, K), k = (channel, tap) as in
//                    w, pairs of neighbouring output pixels (stride 1, even outW; other geometries pack
//                    floats). The images are summed in 8 fixed runs (each in order, the runs then in
//                    order), so the bits do not depend on the thread count.
// Each returns false, computing nothing, where it does not apply (a bf16 path other than AMX; cIn * kh * kw,
// or cOut * kh * kw for the input gradient, below one 32-value chunk; planes below kMinPlane pixels (16 for
// the weight gradient); a strided input gradient; an output size other than the geometry gives); the
// caller then rounds the inputs and runs the float32 kernels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "bf16.h"
#include "pool.h"
#include "threadpool.h"

namespace vgg {
namespace {

// Whether the geometry's output size is the one its input, kernel, stride and padding give (the bf16 kernels
// index the padded input by it; any other geometry takes the float32 kernels, which accept it).
bool consistent(const ConvShape& s) {
  return s.kh >= 1 && s.kw >= 1 && s.stride_h >= 1 && s.stride_w >= 1 && s.pad_h >= 0 && s.pad_w >= 0 &&
         s.h + 2 * s.pad_h >= s.kh && s.w + 2 * s.pad_w >= s.kw &&
         s.out_h == (s.h + 2 * s.pad_h - s.kh) / s.stride_h + 1 && s.out_w == (s.w + 2 * s.pad_w - s.kw) / s.stride_w + 1;
}

// The implicit GEMMs run on AMX only: at VDPBF16PS's rate (twice float32's) they are about 3x slower than
// the float32 Winograd kernels on rounded inputs (measured on the Xeon at the avx512 level), which the
// caller then runs.
bool applies() { return bf16_path() == Bf16Path::Amx; }

// Below these output planes the padded grid's dropped columns (a 4x4 plane pads to 6x6) cost more than the
// tiles gain: the float32 kernels were faster there (measured on the Xeon, 1 thread). The weight gradient
// gains from 4x4 up.
constexpr int64_t kMinPlane = 64;
constexpr int64_t kMinWeightPlane = 16;

constexpr int64_t kMinK = 32;      // below one AMX chunk of k the GEMM would mostly multiply padding
constexpr int64_t kWeightRuns = 8;  // fixed runs of images for the weight gradient
constexpr int64_t kColumns = 512;   // output pixels per forward GEMM, whole images, where the batch allows


/** A buffer of `count` elements private to the thread (slot 0: the input copy, 1: a GEMM's output or A). */
template <typename T>
T* scratch(int slot, int64_t count) {
  static thread_local std::vector<T> buffers[2];
  if (static_cast<int64_t>(buffers[slot].size()) < count) buffers[slot].resize(static_cast<size_t>(count));
  return buffers[slot].data();
}

// The input copy the forward packs from: word [cp][b][iy][ix] = bf16(x[b][2cp]) | bf16(x[b][2cp + 1]) << 16
// at input pixel (iy - padH, ix - padW), zero outside the image and past the last channel, then `tail`
// zero words.
//
// With stride 1 the GEMM's columns are the group's padded pixels j = (b, iy, ix), all of them (the
// "wide" output): tap (ky, kx) of column j reads word j + ky * wp + kx of a channel pair's planes, so a
// row of a packed panel is one contiguous run of the copy. Output (oy, ox) is column (b, oy, ox); the
// columns with ox >= outW or oy >= outH read across a row or image edge and are dropped. Other strides
// take the output pixels as columns, a run per output row.
struct Paired {
  const uint32_t* data;
  int64_t pairs, images, hp, wp, plane;  // channel pairs, images, padded height and width, output pixels per image
  bool wide;
  const ConvShape* s;
};

inline int64_t tail_of(const ConvShape& s, int64_t wp) { return s.kh * wp + s.kw + 32; }

__attribute__((target_clones("avx512f", "default"))) void pair_channels(uint32_t* dst, const float* x,
                                                                        int64_t images, const ConvShape& s,
                                                                        int64_t hp, int64_t wp) {
  const int64_t pairs = (s.c_in + 1) / 2, hw = s.h * s.w;
  for (int64_t b = 0; b < images; b++)
    for (int64_t cp = 0; cp < pairs; cp++) {
      uint32_t* plane = dst + (cp * images + b) * hp * wp;
      const float* even = x + (b * s.c_in + 2 * cp) * hw;
      const bool has_odd = 2 * cp + 1 < s.c_in;
      for (int64_t iy = 0; iy < hp; iy++) {
        uint32_t* row = plane + iy * wp;
        const int64_t sy = iy - s.pad_h;
        if (sy < 0 || sy >= s.h) {
          std::fill(row, row + wp, 0u);
          continue;
        }
        std::fill(row, row + s.pad_w, 0u);
        std::fill(row + s.pad_w + s.w, row + wp, 0u);
        uint32_t* out = row + s.pad_w;
        const float* e = even + sy * s.w;
        if (has_odd) {
          const float* o = e + hw;
          for (int64_t i = 0; i < s.w; i++) out[i] = pair_word(e[i], o[i]);
        } else {
          for (int64_t i = 0; i < s.w; i++) out[i] = bf16_bits(e[i]);
        }
      }
    }
}

// Pair row kp = (tap, channel pair) of the group's im2col matrix, over output pixels j0..j0+len.
void paired_row_words(const void* ctx, uint32_t* out, int64_t kp, int64_t j0, int64_t len) {
  const Paired& p = *static_cast<const Paired*>(ctx);
  const ConvShape& s = *p.s;
  const int64_t tap = kp / p.pairs, cp = kp % p.pairs, ky = tap / s.kw, kx = tap % s.kw;
  const uint32_t* planes = p.data + cp * p.images * p.hp * p.wp;
  if (p.wide) {
    std::memcpy(out, planes + j0 + ky * p.wp + kx, static_cast<size_t>(len) * 4);
    return;
  }
  for (int64_t j = j0, end = j0 + len; j < end;) {
    const int64_t b = j / p.plane, q = j % p.plane, oy = q / s.out_w, ox = q % s.out_w;
    const int64_t run = std::min(end - j, s.out_w - ox);
    const uint32_t* src = planes + (b * p.hp + oy * s.stride_h + ky) * p.wp + ox * s.stride_w + kx;
    uint32_t* o = out + (j - j0);
    if (s.stride_w == 1)
      std::memcpy(o, src, static_cast<size_t>(run) * 4);
    else
      for (int64_t i = 0; i < run; i++) o[i] = src[i * s.stride_w];
    j += run;
  }
}

#if defined(__x86_64__) || defined(__i386__)
// The stride-1 forward straight from the paired copy on AMX, with no packing: with k ordered (tap, channel
// pair) and the pairs a multiple of 16, the 16 k-pair rows of a B tile are one tap's 16 channel pairs at the
// same 16 columns, so a tile load with the copy's plane stride reads it in place. C columns [j0, j1) of the
// (m, cols) wide output, in 32-column blocks of 2 x 2 (or, for the last 16 rows, 1 x 2) 16 x 16 tiles
// summed over every tap and pair; a (m, kpairs) row-major array of pair words. m is a multiple of 16.
__attribute__((target("amx-tile,amx-bf16,avx512f"))) void conv_amx_columns(
    float* c, int64_t ldc, const uint32_t* a, int64_t m, const uint32_t* copy, int64_t plane_stride, int64_t pairs,
    const ConvShape& s, int64_t wp, int64_t j0, int64_t j1) {
  const int64_t kpairs = s.kh * s.kw * pairs, a_stride = kpairs * 4, b_stride = plane_stride * 4;
  alignas(64) float edge[16 * 32];
  amx_tiles_begin();
  for (int64_t j = j0; j < j1; j += 32) {
    const int64_t width = std::min<int64_t>(32, j1 - j);
    for (int64_t o = 0; o < m; o += 32) {
      const bool two = o + 32 <= m;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const uint32_t* a0 = a + o * kpairs;
      const uint32_t* a1 = a0 + 16 * kpairs;
      for (int64_t ky = 0; ky < s.kh; ky++)
        for (int64_t kx = 0; kx < s.kw; kx++) {
          const int64_t tap = ky * s.kw + kx;
          const uint32_t* b = copy + j + ky * wp + kx;
          for (int64_t cp = 0; cp < pairs; cp += 16) {
            const int64_t kp = tap * pairs + cp;
            _tile_loadd(6, b + cp * plane_stride, b_stride);
            _tile_loadd(7, b + cp * plane_stride + 16, b_stride);
            _tile_loadd(4, a0 + kp, a_stride);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            if (two) {
              _tile_loadd(5, a1 + kp, a_stride);
              _tile_dpbf16ps(2, 5, 6);
              _tile_dpbf16ps(3, 5, 7);
            }
          }
        }
      // Whole 32-column blocks store in place; the last, narrower one through `edge`.
      for (int h = 0; h < (two ? 2 : 1); h++) {
        float* dst = c + (o + 16 * h) * ldc + j;
        if (width == 32) {
          if (h == 0) {
            _tile_stored(0, dst, ldc * 4);
            _tile_stored(1, dst + 16, ldc * 4);
          } else {
            _tile_stored(2, dst, ldc * 4);
            _tile_stored(3, dst + 16, ldc * 4);
          }
          continue;
        }
        if (h == 0) {
          _tile_stored(0, edge, 32 * 4);
          _tile_stored(1, edge + 16, 32 * 4);
        } else {
          _tile_stored(2, edge, 32 * 4);
          _tile_stored(3, edge + 16, 32 * 4);
        }
        for (int64_t r = 0; r < 16; r++) std::memcpy(dst + r * ldc, edge + r * 32, static_cast<size_t>(width) * 4);
      }
    }
  }
  amx_tiles_end();
}
#endif

// y (n, cOut, P) = conv(x) with w (cOut, K): groups of whole images per GEMM (about kColumns output pixels,
// fewer where the batch would leave a thread idle), the groups split over the threads (serial GEMMs), or
// one at a time with the GEMM threaded when there are fewer groups than threads. A value does not depend
// on the grouping: each sums its k in the same order.
// Where the forward's output goes: y (n, cOut, outH, outW), or with `pooled` set, the 2x2 stride-2 max-pool
// of its ReLU and the pool's argmax (n, cOut, outH / 2, outW / 2), as max_pool2d_forward writes them.
struct Output {
  float* y;
  int32_t* argmax;
  bool pooled;
};

// to[q] = from[q] + add, or its ReLU, for q < count.
__attribute__((target_clones("avx512f", "default"))) void store_row(float* to, const float* from, int64_t count,
                                                                    float add, bool relu) {
  if (relu)
    for (int64_t q = 0; q < count; q++) to[q] = std::max(from[q] + add, 0.0f);
  else
    for (int64_t q = 0; q < count; q++) to[q] = from[q] + add;
}

// dx[i] = 0 where x[i] is not > 0 (ReLU's backward fused into the input gradient).
__attribute__((target_clones("avx512f", "default"))) void mask_by_relu(float* dx, const float* x, int64_t count) {
  for (int64_t i = 0; i < count; i++) dx[i] = x[i] > 0.0f ? dx[i] : 0.0f;
}

// The sum of a row's values rounded to bf16, in 16 interleaved partial sums added in a fixed order.
__attribute__((target_clones("avx512f", "default"))) float rounded_sum(const float* row, int64_t count) {
  float lanes[16] = {};
  int64_t q = 0;
  for (; q + 16 <= count; q += 16)
    for (int i = 0; i < 16; i++) lanes[i] += bf16_to_float(bf16_bits(row[q + i]));
  for (; q < count; q++) lanes[q % 16] += bf16_to_float(bf16_bits(row[q]));
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  return sum;
}


void forward_paired(const Output& out, const float* x, const float* w, const float* bias, const ConvShape& s,
                    bool relu) {
  float* y = out.y;
  const bool wide = s.stride_h == 1 && s.stride_w == 1;
  // The direct AMX kernel: stride 1, whole 16-row tiles of output channels, channel pairs padded to 16.
  const bool direct = wide && bf16_path() == Bf16Path::Amx && s.c_out % 16 == 0;
  const int64_t used_pairs = (s.c_in + 1) / 2, pairs = direct ? (used_pairs + 15) / 16 * 16 : used_pairs;
  const int64_t taps = s.kh * s.kw, k = 2 * taps * pairs, plane = s.out_h * s.out_w;
  const int64_t hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
  // w' [o][(tap * pairs + c / 2) * 2 + c % 2] = w[o][c][tap], zero for the padding channel.
  std::vector<float> wr(static_cast<size_t>(s.c_out * k), 0.0f);
  for (int64_t o = 0; o < s.c_out; o++)
    for (int64_t c = 0; c < s.c_in; c++)
      for (int64_t t = 0; t < taps; t++)
        wr[o * k + (t * pairs + c / 2) * 2 + c % 2] = w[(o * s.c_in + c) * taps + t];
  std::vector<uint32_t> words;
  if (direct) {
    words.resize(static_cast<size_t>(s.c_out * k / 2));
    for (size_t i = 0; i < words.size(); i++) words[i] = pair_word(wr[2 * i], wr[2 * i + 1]);
  }
  const int64_t columns_per_image = wide ? hp * wp : plane, tail = tail_of(s, wp);
  const int64_t threads = num_threads();
  const int64_t most = std::max<int64_t>(1, s.n / threads);
  const int64_t group = std::clamp<int64_t>((kColumns + columns_per_image - 1) / columns_per_image, 1, most);
  const int64_t groups = (s.n + group - 1) / group;
  auto run_group = [&](int64_t g, bool threaded) {
    const int64_t b0 = g * group, images = std::min(group, s.n - b0), cols = images * columns_per_image;
    uint32_t* copy = scratch<uint32_t>(0, images * pairs * hp * wp + tail);
    pair_channels(copy, x + b0 * s.c_in * s.h * s.w, images, s, hp, wp);
    std::fill(copy + images * used_pairs * hp * wp, copy + images * pairs * hp * wp + tail, 0u);
    float* c = scratch<float>(1, s.c_out * cols);
#if defined(__x86_64__) || defined(__i386__)
    if (direct) {
      const int64_t blocks = (cols + 31) / 32;
      auto columns = [&](int ith, int nth) {
        int64_t begin, end;
        split_range(blocks, ith, nth, 1, &begin, &end);
        if (begin < end)
          conv_amx_columns(c, cols, words.data(), s.c_out, copy, images * hp * wp, pairs, s, wp, begin * 32,
                           std::min(cols, end * 32));
      };
      if (threaded)
        parallel_run(columns, blocks);
      else
        columns(0, 1);
    }
#endif
    if (!direct) {
      const Paired ctx{copy, pairs, images, hp, wp, plane, wide, &s};
      Bf16Source src;
      src.row_words = paired_row_words;
      src.ctx = &ctx;
      bf16_gemm_source(c, cols, wr.data(), k, false, src, s.c_out, cols, k, 0.0f, threaded);
    }
    const int64_t ld = wide ? wp : s.out_w, pooled_plane = (s.out_h / 2) * (s.out_w / 2);
    if (out.pooled) {
      for (int64_t b = 0; b < images; b++)
        for (int64_t o = 0; o < s.c_out; o++)
          for (int64_t oy2 = 0; oy2 < s.out_h / 2; oy2++) {
            const int64_t at = ((b0 + b) * s.c_out + o) * pooled_plane + oy2 * (s.out_w / 2);
            const float* from = c + o * cols + b * columns_per_image + 2 * oy2 * ld;
            relu_pool_row_pair(y + at, out.argmax + at, from, ld, bias ? bias[o] : 0.0f, oy2, s.out_w);
          }
      return;
    }
    for (int64_t b = 0; b < images; b++)
      for (int64_t o = 0; o < s.c_out; o++)
        for (int64_t oy = 0; oy < s.out_h; oy++) {
          const float* from = c + o * cols + b * columns_per_image + oy * ld;
          float* to = y + ((b0 + b) * s.c_out + o) * plane + oy * s.out_w;
          store_row(to, from, s.out_w, bias ? bias[o] : 0.0f, relu);
        }
  };
  if (groups < threads) {
    for (int64_t g = 0; g < groups; g++) run_group(g, true);
    return;
  }
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        split_range(groups, ith, nth, 1, &begin, &end);
        for (int64_t g = begin; g < end; g++) run_group(g, false);
      },
      groups);
}

// The weight gradient's copy of the input: bf16 bits [c][b][iy][ix] at input pixel (iy - padH, ix - padW),
// zero outside the image, then `tail` zeros. With stride 1 the GEMM's k runs over the group's padded
// pixels j = (b, iy, ix) (dy is zero at the columns that are not outputs), so row r = (c, ky, kx) of
// cols is the copy shifted by ky * wp + kx, and a pair word is an unaligned 32-bit read of it.
struct Halves {
  const uint16_t* data;
  int64_t images, hp, wp;
  const ConvShape* s;
};

__attribute__((target_clones("avx512f", "default"))) void bf16_planes(uint16_t* dst, const float* x,
                                                                      int64_t images, const ConvShape& s,
                                                                      int64_t hp, int64_t wp) {
  for (int64_t b = 0; b < images; b++)
    for (int64_t c = 0; c < s.c_in; c++) {
      uint16_t* plane = dst + (c * images + b) * hp * wp;
      const float* src = x + (b * s.c_in + c) * s.h * s.w;
      for (int64_t iy = 0; iy < hp; iy++) {
        uint16_t* row = plane + iy * wp;
        const int64_t sy = iy - s.pad_h;
        if (sy < 0 || sy >= s.h) {
          std::fill(row, row + wp, uint16_t{0});
          continue;
        }
        std::fill(row, row + s.pad_w, uint16_t{0});
        std::fill(row + s.pad_w + s.w, row + wp, uint16_t{0});
        const float* e = src + sy * s.w;
        for (int64_t i = 0; i < s.w; i++) row[s.pad_w + i] = bf16_bits(e[i]);
      }
    }
}

// Row r = (channel, ky, kx) of the group's wide im2col matrix: pair words of padded pixels 2kp0 onwards.
void halves_row_words(const void* ctx, uint32_t* out, int64_t r, int64_t kp0, int64_t len) {
  const Halves& h = *static_cast<const Halves*>(ctx);
  const ConvShape& s = *h.s;
  const int64_t taps = s.kh * s.kw, c = r / taps, ky = r % taps / s.kw, kx = r % s.kw;
  const uint16_t* src = h.data + c * h.images * h.hp * h.wp + 2 * kp0 + ky * h.wp + kx;
  std::memcpy(out, src, static_cast<size_t>(len) * 4);
}

struct Image {
  const float* x;  // one image, (cIn, h, w)
  const ConvShape* s;
};

// out[i] = cols[r][q0 + i], i < len: row r = (c, ky, kx) of the image's im2col matrix over output pixels.
void im2col_run(const void* ctx, float* out, int64_t r, int64_t q0, int64_t len) {
  const Image& im = *static_cast<const Image*>(ctx);
  const ConvShape& s = *im.s;
  const int64_t kx = r % s.kw, ky = r / s.kw % s.kh, c = r / (s.kw * s.kh);
  const float* plane = im.x + c * s.h * s.w;
  for (int64_t q = q0, end = q0 + len; q < end;) {
    const int64_t oy = q / s.out_w, ox = q % s.out_w, run = std::min(end - q, s.out_w - ox);
    float* o = out + (q - q0);
    const int64_t iy = oy * s.stride_h - s.pad_h + ky;
    if (iy < 0 || iy >= s.h) {
      std::fill(o, o + run, 0.0f);
    } else {
      const float* src = plane + iy * s.w;
      const int64_t ix0 = ox * s.stride_w - s.pad_w + kx;
      if (s.stride_w == 1) {
        // Pixels i with 0 <= ix0 + i < w are copied, the others are padding.
        const int64_t lo = std::clamp<int64_t>(-ix0, 0, run), hi = std::clamp<int64_t>(s.w - ix0, lo, run);
        std::fill(o, o + lo, 0.0f);
        std::memcpy(o + lo, src + ix0 + lo, static_cast<size_t>(hi - lo) * sizeof(float));
        std::fill(o + hi, o + run, 0.0f);
      } else {
        for (int64_t i = 0; i < run; i++) {
          const int64_t ix = ix0 + i * s.stride_w;
          o[i] = ix >= 0 && ix < s.w ? src[ix] : 0.0f;
        }
      }
    }
    q += run;
  }
}

}  // namespace

bool conv2d_forward_bf16(float* y, const float* x, const float* w, const float* bias, const ConvShape& s, bool relu) {
  if (s.c_in * s.kh * s.kw < kMinK || !consistent(s) || !applies() || s.out_h * s.out_w < kMinPlane) return false;
  forward_paired(Output{y, nullptr, false}, x, w, bias, s, relu);
  return true;
}

bool conv2d_relu_pool_forward_bf16(float* y, int32_t* argmax, const float* x, const float* w, const float* bias,
                                   const ConvShape& s) {
  if (s.c_in * s.kh * s.kw < kMinK || !consistent(s) || !applies() || s.out_h * s.out_w < kMinPlane) return false;
  forward_paired(Output{y, argmax, true}, x, w, bias, s, true);
  return true;
}

bool conv2d_backward_input_bf16(float* dx, const float* dy, const float* w, const float* relu_x, const ConvShape& s) {
  if (!consistent(s) || !applies() || s.stride_h != 1 || s.stride_w != 1 || s.pad_h > s.kh - 1 || s.pad_w > s.kw - 1 ||
      s.h * s.w < kMinPlane)
    return false;
  if (s.c_out * s.kh * s.kw < kMinK) return false;
  // wt[ci][co][ky][kx] = w[co][ci][kh - 1 - ky][kw - 1 - kx]
  const int64_t taps = s.kh * s.kw;
  std::vector<float> wt(static_cast<size_t>(s.c_in * s.c_out * taps));
  for (int64_t co = 0; co < s.c_out; co++)
    for (int64_t ci = 0; ci < s.c_in; ci++)
      for (int64_t t = 0; t < taps; t++)
        wt[(ci * s.c_out + co) * taps + (taps - 1 - t)] = w[(co * s.c_in + ci) * taps + t];
  const ConvShape t{s.n,          s.c_out,      s.out_h, s.out_w, s.c_in, s.kh, s.kw, 1, 1, s.kh - 1 - s.pad_h,
                    s.kw - 1 - s.pad_w, s.h, s.w};
  forward_paired(Output{dx, nullptr, false}, dy, wt.data(), nullptr, t, false);
  if (relu_x) mask_by_relu(dx, relu_x, s.n * s.c_in * s.h * s.w);
  return true;
}

bool conv2d_backward_weight_bf16(float* dw, float* db, const float* dy, const float* x, const ConvShape& s) {
  const int64_t k = s.c_in * s.kh * s.kw, plane = s.out_h * s.out_w, wsize = s.c_out * k;
  if (k < kMinK || !consistent(s) || !applies() || plane < kMinWeightPlane) return false;
  const int64_t runs = std::min<int64_t>(s.n, kWeightRuns);
  if (runs == 0) {
    std::fill(dw, dw + wsize, 0.0f);
    if (db) std::fill(db, db + s.c_out, 0.0f);
    return true;
  }
  // Stride 1 runs on the wide grid (halves_row_words); other strides pack floats, image by image.
  const bool wide = s.stride_w == 1 && s.stride_h == 1;
  const int64_t hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
  // Images per GEMM: about kColumns pixels of k (whole images), the same whatever the thread count.
  const int64_t group = wide ? std::max<int64_t>(1, (kColumns + hp * wp - 1) / (hp * wp)) : 1;
  // Each run's partial sums: wide runs hold dw^T (K, cOut), the others dw (cOut, K).
  std::vector<float> partial(static_cast<size_t>(runs * (wsize + s.c_out)));
  parallel_run(
      [&](int ith, int nth) {
        for (int64_t r = ith; r < runs; r += nth) {
          float* pw = partial.data() + r * (wsize + s.c_out);
          float* pb = pw + wsize;
          std::fill(pb, pb + s.c_out, 0.0f);
          const int64_t r0 = r * s.n / runs, r1 = (r + 1) * s.n / runs;
          for (int64_t b0 = r0; b0 < r1; b0 += group) {
            const int64_t images = std::min(group, r1 - b0);
            const float* dyb = dy + b0 * s.c_out * plane;
            const float beta = b0 == r0 ? 0.0f : 1.0f;
            if (wide) {
              // k: the group's padded pixels, rounded up to a whole pair.
              const int64_t pixels = (images * hp * wp + 1) / 2 * 2, tail = s.kh * wp + s.kw + 2;
              uint16_t* copy = scratch<uint16_t>(0, s.c_in * images * hp * wp + tail);
              bf16_planes(copy, x + b0 * s.c_in * s.h * s.w, images, s, hp, wp);
              std::fill(copy + s.c_in * images * hp * wp, copy + s.c_in * images * hp * wp + tail, uint16_t{0});
              const Halves ctx{copy, images, hp, wp, &s};
              Bf16RowSource src;
              src.row_words = halves_row_words;
              src.ctx = &ctx;
              // B = dy on the wide grid, (cOut, pixels), zero off the outputs.
              float* spread = scratch<float>(1, s.c_out * pixels);
              std::fill(spread, spread + s.c_out * pixels, 0.0f);
              for (int64_t o = 0; o < s.c_out; o++)
                for (int64_t b = 0; b < images; b++)
                  for (int64_t oy = 0; oy < s.out_h; oy++)
                    std::memcpy(spread + o * pixels + (b * hp + oy) * wp, dyb + ((b * s.c_out + o) * s.out_h + oy) * s.out_w,
                                static_cast<size_t>(s.out_w) * sizeof(float));
              bf16_gemm_rows(pw, s.c_out, src, spread, pixels, true, k, s.c_out, pixels, beta, false);
            } else {
              const Image im{x + b0 * s.c_in * s.h * s.w, &s};
              Bf16Source src;
              src.column = im2col_run;  // op(B) (P, K) = cols^T: a run down column r is row r of cols
              src.ctx = &im;
              bf16_gemm_source(pw, k, dyb, plane, false, src, s.c_out, k, plane, beta, false);
            }
            if (db)
              for (int64_t b = 0; b < images; b++)
                for (int64_t o = 0; o < s.c_out; o++) pb[o] += rounded_sum(dyb + (b * s.c_out + o) * plane, plane);
          }
        }
      },
      runs);
  // The runs in order (weights and bias sums alike); a wide run's (K, cOut) partial is then transposed.
  float* sum = partial.data();
  for (int64_t r = 1; r < runs; r++) {
    const float* pw = partial.data() + r * (wsize + s.c_out);
    for (int64_t i = 0; i < wsize + s.c_out; i++) sum[i] += pw[i];
  }
  for (int64_t o = 0; o < s.c_out; o++)
    for (int64_t i = 0; i < k; i++) dw[o * k + i] = wide ? sum[i * s.c_out + o] : sum[o * k + i];
  if (db) std::memcpy(db, sum + wsize, static_cast<size_t>(s.c_out) * sizeof(float));
  return true;
}

}  // namespace vgg
