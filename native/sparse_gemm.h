// GEMM with a mostly-zero left operand. ReLU and dropout leave 50-80% exact zeros in a fully connected
// layer's input and in the gradient of its output, and those are the left operands of all three GEMMs of
// its training step (y = x W^T, dx = dy W, dW = dy^T x): skipping the zero terms skips most of the work.
#pragma once
#include <string>
#include <cstdint>

namespace vgg {

/**
 * C = op(A) * op(B) + beta * C computed from op(A)'s nonzeros only, when op(A) (m, k) is sparse enough and
 * the product large enough for that to pay; returns false, with c untouched, when it is not. Same argument
 * conventions as sgemm (gemm.h). Each c[i][j] sums a[i][p] * b[p][j] over ascending p in fixed blocks of
 * p, so the result does not depend on the thread count. IEEE semantics are kept for non-finite B: a zero
 * of A against an Inf or NaN of B gives NaN, as the dense product does.
 */
bool sgemm_sparse_a(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
                    int64_t n, int64_t k, bool trans_a, bool trans_b, float beta);

/**
 * The same with B as packed by pack_b_all (gemm.h), read in place: C (m, n) = A (m, k) row stride lda x B +
 * beta * C. Bit for bit what sgemm_sparse_a gives with the B it was packed from.
 */
bool sgemm_sparse_a_packed_b(float* c, int64_t ldc, const float* a, int64_t lda, const float* packed_b, int64_t m,
                             int64_t n, int64_t k, float beta);

/** The density (nonzeros / elements of op(A)) at or below which sgemm_sparse_a computes the product. */
double sparse_gemm_max_density();
/** Whether the sparse path is on (VGG_SPARSE_GEMM=0 turns it off). */
bool sparse_gemm_enabled();
/** How many products the sparse path has computed in this process (for tests and `vgg info`). */
int64_t sparse_gemm_calls();

/** The sparse-A kernel in use, for `vgg info`. */
std::string sparse_gemm_kernel_name();

}  // namespace vgg
