// F(2x2, 3x3) (Lavin & Gray): with input tile d (4x4) and filter g (3x3),
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A,
// and the elementwise product summed over input channels is, for each of the 16 tile positions e, a GEMM
// M_e (cOut, tiles) = U_e (cOut, cIn) x V_e (cIn, tiles). Tiles are processed in chunks that keep V and M
// in cache.
#include "winograd.h"

#include <algorithm>

#include "gemm.h"
#include "workspace.h"

namespace vgg {

bool winograd_applies(const ConvShape& s) {
  return s.kh == 3 && s.kw == 3 && s.stride_h == 1 && s.stride_w == 1 && s.out_h == s.h + 2 * s.pad_h - 2 &&
         s.out_w == s.w + 2 * s.pad_w - 2 && s.out_h > 0 && s.out_w > 0;
}

int64_t winograd_weights_size(int64_t c_out, int64_t c_in) { return 16 * packed_a_size(c_out, c_in); }

void winograd_prepare_weights(float* packed, const float* w, int64_t c_out, int64_t c_in) {
  const int64_t plane = c_out * c_in;
  float* u = thread_scratch(1, 16 * plane);
  for (int64_t f = 0; f < plane; f++) {
    const float* g = w + f * 9;
    float t[4][3];  // G g: (4, 3)
    for (int j = 0; j < 3; j++) {
      t[0][j] = g[j];
      t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
      t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
      t[3][j] = g[6 + j];
    }
    for (int i = 0; i < 4; i++) {  // (G g) G^T: (4, 4)
      u[(i * 4 + 0) * plane + f] = t[i][0];
      u[(i * 4 + 1) * plane + f] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
      u[(i * 4 + 2) * plane + f] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
      u[(i * 4 + 3) * plane + f] = t[i][2];
    }
  }
  const int64_t block = packed_a_size(c_out, c_in);
  for (int e = 0; e < 16; e++) pack_a_all(packed + e * block, u + e * plane, c_in, false, c_out, c_in);
}

void winograd_forward_image(float* y, const float* x, const float* u, const float* bias, const ConvShape& s,
                            bool relu) {
  const int64_t tiles_h = (s.out_h + 1) / 2, tiles_w = (s.out_w + 1) / 2, tiles = tiles_h * tiles_w;
  // Chunk so V (16, cIn, chunk) and M (16, cOut, chunk) take about 1 MiB together.
  int64_t chunk = (int64_t{1} << 14) / (s.c_in + s.c_out);
  chunk = std::max<int64_t>(16, std::min<int64_t>(512, chunk / 16 * 16));
  float* v = thread_scratch(2, 16 * s.c_in * chunk);
  float* m = thread_scratch(3, 16 * s.c_out * chunk);
  for (int64_t t0 = 0; t0 < tiles; t0 += chunk) {
    const int64_t nt = std::min(chunk, tiles - t0);
    // Input transform: V_e[ci][t] = (B^T d B)_e for the 4x4 patch at (2 ty - padH, 2 tx - padW).
    for (int64_t ci = 0; ci < s.c_in; ci++) {
      const float* xc = x + ci * s.h * s.w;
      for (int64_t t = 0; t < nt; t++) {
        const int64_t ty = (t0 + t) / tiles_w, tx = (t0 + t) - ty * tiles_w;
        const int64_t iy0 = 2 * ty - s.pad_h, ix0 = 2 * tx - s.pad_w;
        float d[4][4];
        if (iy0 >= 0 && ix0 >= 0 && iy0 + 4 <= s.h && ix0 + 4 <= s.w) {
          for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) d[r][c] = xc[(iy0 + r) * s.w + ix0 + c];
        } else {
          for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) {
              const int64_t iy = iy0 + r, ix = ix0 + c;
              d[r][c] = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w ? xc[iy * s.w + ix] : 0.0f;
            }
        }
        float b[4][4];  // B^T d
        for (int c = 0; c < 4; c++) {
          b[0][c] = d[0][c] - d[2][c];
          b[1][c] = d[1][c] + d[2][c];
          b[2][c] = d[2][c] - d[1][c];
          b[3][c] = d[1][c] - d[3][c];
        }
        float* vt = v + ci * chunk + t;
        const int64_t e_stride = s.c_in * chunk;
        for (int r = 0; r < 4; r++) {  // (B^T d) B
          vt[(r * 4 + 0) * e_stride] = b[r][0] - b[r][2];
          vt[(r * 4 + 1) * e_stride] = b[r][1] + b[r][2];
          vt[(r * 4 + 2) * e_stride] = b[r][2] - b[r][1];
          vt[(r * 4 + 3) * e_stride] = b[r][1] - b[r][3];
        }
      }
    }
    const int64_t block = packed_a_size(s.c_out, s.c_in);
    for (int e = 0; e < 16; e++)
      sgemm_serial_packed_a(m + e * s.c_out * chunk, chunk, u + e * block, v + e * s.c_in * chunk, chunk, s.c_out, nt,
                            s.c_in, 0.0f);
    // Output transform: Y = A^T M A, plus bias and ReLU, clipped at the bottom/right edge.
    const int64_t e_stride = s.c_out * chunk;
    for (int64_t co = 0; co < s.c_out; co++) {
      const float bv = bias ? bias[co] : 0.0f;
      float* yc = y + co * s.out_h * s.out_w;
      for (int64_t t = 0; t < nt; t++) {
        const float* mt = m + co * chunk + t;
        float a[2][4];  // A^T M
        for (int c = 0; c < 4; c++) {
          const float m0 = mt[c * e_stride], m1 = mt[(4 + c) * e_stride];
          const float m2 = mt[(8 + c) * e_stride], m3 = mt[(12 + c) * e_stride];
          a[0][c] = m0 + m1 + m2;
          a[1][c] = m1 - m2 - m3;
        }
        const int64_t ty = (t0 + t) / tiles_w, tx = (t0 + t) - ty * tiles_w;
        for (int r = 0; r < 2; r++) {
          const int64_t oy = 2 * ty + r;
          if (oy >= s.out_h) break;
          float out[2] = {a[r][0] + a[r][1] + a[r][2] + bv, a[r][1] - a[r][2] - a[r][3] + bv};
          for (int c = 0; c < 2; c++) {
            const int64_t ox = 2 * tx + c;
            if (ox >= s.out_w) break;
            yc[oy * s.out_w + ox] = relu && out[c] < 0.0f ? 0.0f : out[c];
          }
        }
      }
    }
  }
}

}  // namespace vgg
