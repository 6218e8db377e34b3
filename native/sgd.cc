// d = grad + wd * param; buf = first ? d : momentum * buf + (1 - dampening) * d;
// d = nesterov ? d + momentum * buf : buf; param -= lr * d. Arithmetic in double, like the reference.
#include "sgd.h"

#include "threadpool.h"

namespace vgg {

void sgd_step(float* param, const float* grad, float* buf, int64_t len, const SgdParams& o) {
  const bool use_momentum = o.momentum != 0.0 && buf != nullptr;
  parallel_run(
      [&](int ith, int nth) {
        int64_t i0, i1;
        split_range(len, ith, nth, 16, &i0, &i1);
        for (int64_t i = i0; i < i1; i++) {
          double d = static_cast<double>(grad[i]) + o.weight_decay * param[i];
          if (use_momentum) {
            const double b = o.first_step ? d : o.momentum * buf[i] + (1.0 - o.dampening) * d;
            buf[i] = static_cast<float>(b);
            d = o.nesterov ? d + o.momentum * static_cast<float>(b) : static_cast<float>(b);
          }
          param[i] = static_cast<float>(param[i] - o.lr * d);
        }
      },
      len / (1 << 15) + 1);
}

// Compiled without target flags: the baseline x86-64 vector width whatever the level.
const char* sgd_kernel_name() { return "compiler-vectorised double, baseline (sse2)"; }

}  // namespace vgg
