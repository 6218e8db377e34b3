// Convolutions under bf16 autocast (bf16.h) as implicit GEMMs on the bf16 GEMM's kernels (AMX tiles,
// VDPBF16PS or the emulation): the im2col matrix is never stored; its rows are produced as the GEMM packs
// them, rounded to bf16 with the other operand, and the products are summed in float32.
//
//   forward:         y_b (cOut, P) = w (cOut, K) cols_b (K, P), then bias and ReLU; P = outH * outW,
//                    K = cIn * kh * kw, cols_b = im2col(x_b).
//   input gradient:  for stride 1 the adjoint is itself a convolution: of dy with the weights transposed
//                    (cIn, cOut, kh, kw) and flipped, padded kh - 1 - pad, so it runs as the forward does.
//   weight gradient: dw (cOut, K) = sum over images of dy_b (cOut, P) cols_b^T (P, K); the images are
//                    summed in a fixed number of groups (each in image order, the groups then in order), so
//                    the bits do not depend on the thread count.
// Each returns false, computing nothing, where it does not apply (K below one 32-value chunk, or a strided
// input gradient); the caller then rounds the inputs and runs the float32 kernels.
#include <algorithm>
#include <cstring>
#include <vector>

#include "bf16.h"
#include "threadpool.h"

namespace vgg {
namespace {

constexpr int64_t kMinK = 32;      // below one AMX chunk of k the GEMM would mostly multiply padding
constexpr int64_t kWeightGroups = 8;

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

// y (n, cOut, P) = conv(x) with w (cOut, K): images split over the threads (serial GEMMs), or one at a time
// with the GEMM threaded when there are fewer images than threads.
void forward_images(float* y, const float* x, const float* w, const float* bias, const ConvShape& s, bool relu) {
  const int64_t k = s.c_in * s.kh * s.kw, plane = s.out_h * s.out_w;
  auto image = [&](int64_t b, bool threaded) {
    const Image im{x + b * s.c_in * s.h * s.w, &s};
    Bf16Source src;
    src.row = im2col_run;
    src.ctx = &im;
    float* yb = y + b * s.c_out * plane;
    bf16_gemm_source(yb, plane, w, k, false, src, s.c_out, plane, k, 0.0f, threaded);
    if (!bias && !relu) return;
    for (int64_t o = 0; o < s.c_out; o++) {
      float* row = yb + o * plane;
      const float add = bias ? bias[o] : 0.0f;
      if (relu)
        for (int64_t q = 0; q < plane; q++) row[q] = std::max(row[q] + add, 0.0f);
      else
        for (int64_t q = 0; q < plane; q++) row[q] += add;
    }
  };
  if (s.n < num_threads()) {
    for (int64_t b = 0; b < s.n; b++) image(b, true);
    return;
  }
  parallel_run(
      [&](int ith, int nth) {
        int64_t begin, end;
        split_range(s.n, ith, nth, 1, &begin, &end);
        for (int64_t b = begin; b < end; b++) image(b, false);
      },
      s.n);
}

}  // namespace

bool conv2d_forward_bf16(float* y, const float* x, const float* w, const float* bias, const ConvShape& s, bool relu) {
  if (s.c_in * s.kh * s.kw < kMinK) return false;
  forward_images(y, x, w, bias, s, relu);
  return true;
}

bool conv2d_backward_input_bf16(float* dx, const float* dy, const float* w, const float* relu_x, const ConvShape& s) {
  if (s.stride_h != 1 || s.stride_w != 1 || s.pad_h > s.kh - 1 || s.pad_w > s.kw - 1) return false;
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
  forward_images(dx, dy, wt.data(), nullptr, t, false);
  if (relu_x) {
    const int64_t count = s.n * s.c_in * s.h * s.w;
    for (int64_t i = 0; i < count; i++) dx[i] = relu_x[i] > 0.0f ? dx[i] : 0.0f;
  }
  return true;
}

bool conv2d_backward_weight_bf16(float* dw, float* db, const float* dy, const float* x, const ConvShape& s) {
  const int64_t k = s.c_in * s.kh * s.kw, plane = s.out_h * s.out_w, wsize = s.c_out * k;
  if (k < kMinK) return false;
  const int64_t groups = std::min<int64_t>(s.n, kWeightGroups);
  if (groups == 0) {
    std::fill(dw, dw + wsize, 0.0f);
    if (db) std::fill(db, db + s.c_out, 0.0f);
    return true;
  }
  std::vector<float> partial(static_cast<size_t>(groups * (wsize + s.c_out)));
  parallel_run(
      [&](int ith, int nth) {
        for (int64_t g = ith; g < groups; g += nth) {
          float* pw = partial.data() + g * (wsize + s.c_out);
          float* pb = pw + wsize;
          std::fill(pb, pb + s.c_out, 0.0f);
          const int64_t b0 = g * s.n / groups, b1 = (g + 1) * s.n / groups;
          for (int64_t b = b0; b < b1; b++) {
            const Image im{x + b * s.c_in * s.h * s.w, &s};
            Bf16Source src;
            src.column = im2col_run;  // op(B) (P, K) = cols_b^T: a run down column r is row r of cols_b
            src.ctx = &im;
            const float* dyb = dy + b * s.c_out * plane;
            bf16_gemm_source(pw, k, dyb, plane, false, src, s.c_out, k, plane, b == b0 ? 0.0f : 1.0f, false);
            if (db)
              for (int64_t o = 0; o < s.c_out; o++) {
                float sum = 0.0f;
                for (int64_t q = 0; q < plane; q++) sum += bf16_to_float(bf16_bits(dyb[o * plane + q]));
                pb[o] += sum;
              }
          }
        }
      },
      groups);
  std::memcpy(dw, partial.data(), static_cast<size_t>(wsize) * sizeof(float));
  if (db) std::memcpy(db, partial.data() + wsize, static_cast<size_t>(s.c_out) * sizeof(float));
  for (int64_t g = 1; g < groups; g++) {
    const float* pw = partial.data() + g * (wsize + s.c_out);
    for (int64_t i = 0; i < wsize; i++) dw[i] += pw[i];
    if (db)
      for (int64_t o = 0; o < s.c_out; o++) db[o] += pw[wsize + o];
  }
  return true;
}

}  // namespace vgg
