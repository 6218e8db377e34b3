// One SGD step with PyTorch's torch.optim.SGD semantics (weight decay, momentum, dampening, Nesterov).
#pragma once
#include <cstdint>

namespace vgg {

struct SgdParams {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, first_step;
};

// param, grad and momentum_buf are (len); momentum_buf may be null only when momentum == 0.
void sgd_step(float* param, const float* grad, float* momentum_buf, int64_t len, const SgdParams& o);

/** The SGD update loop, for `vgg info`. */
const char* sgd_kernel_name();

}  // namespace vgg
