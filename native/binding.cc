// All Node-API glue: argument checks (types, exact lengths, sizes, overflow) and calls into the kernels,
// which know nothing of N-API. Every check throws a JS TypeError or RangeError before any kernel runs.
#include <napi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <string>

#include "batchnorm.h"
#include "bf16.h"
#include "conv2d.h"
#include "elementwise.h"
#include "gemm.h"
#include "sparse_gemm.h"
#include "isa.h"
#include "kernel_cache.h"
#include "loss.h"
#include "png.h"
#include "pool.h"
#include "sgd.h"
#include "threadpool.h"
#include "winograd.h"

namespace {

using vgg::ConvShape;
using vgg::PoolShape;

constexpr int kMaxThreads = 256;
constexpr double kMaxSize = 2147483647.0;     // every size is an int32-range integer
constexpr int64_t kMaxWorkspace = int64_t{1} << 28;  // floats in one per-thread im2col buffer (1 GiB)

[[noreturn]] void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] void range_error(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string describe(const Napi::Value& v) {
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_float32_array: return "Float32Array";
      case napi_float64_array: return "Float64Array";
      case napi_int32_array: return "Int32Array";
      case napi_uint8_array: return "Uint8Array";
      case napi_uint32_array: return "Uint32Array";
      default: return "another typed array";
    }
  }
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsNumber()) return "number " + num(v.As<Napi::Number>().DoubleValue());
  if (v.IsString()) return "a string";
  if (v.IsArray()) return "an Array";
  if (v.IsBoolean()) return "a boolean";
  return "an object";
}


void expect_args(const Napi::CallbackInfo& info, size_t n) {
  if (info.Length() != n)
    type_error(info.Env(), "Expected " + std::to_string(n) + " arguments but received " + std::to_string(info.Length()));
}

int64_t checked_mul(Napi::Env env, const char* what, std::initializer_list<int64_t> factors) {
  int64_t p = 1;
  for (int64_t f : factors)
    if (__builtin_mul_overflow(p, f, &p) || p > (int64_t{1} << 53))
      range_error(env, std::string("Expected the size of ") + what + " to fit in memory but its dimensions overflow");
  return p;
}

template <typename T, napi_typedarray_type Type>
T* typed(const Napi::Value& v, const char* name, const char* type_name, int64_t length) {
  Napi::Env env = v.Env();
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Type)
    type_error(env, std::string("Expected ") + name + " to be a " + type_name + " but received " + describe(v));
  auto arr = v.As<Napi::TypedArrayOf<T>>();
  if (static_cast<int64_t>(arr.ElementLength()) != length)
    range_error(env, std::string("Expected ") + name + " of length " + std::to_string(length) +
                         " but received length " + std::to_string(arr.ElementLength()));
  return arr.Data();
}

float* f32(const Napi::Value& v, const char* name, int64_t length) {
  return typed<float, napi_float32_array>(v, name, "Float32Array", length);
}
int32_t* i32(const Napi::Value& v, const char* name, int64_t length) {
  return typed<int32_t, napi_int32_array>(v, name, "Int32Array", length);
}
// A Float32Array of the given length, or null.
float* f32_or_null(const Napi::Value& v, const char* name, int64_t length) {
  return v.IsNull() || v.IsUndefined() ? nullptr : f32(v, name, length);
}
// A Float32Array whose length is whatever it is (element-wise ops compare lengths between arguments).
Napi::TypedArrayOf<float> f32_any(const Napi::Value& v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(v.Env(), std::string("Expected ") + name + " to be a Float32Array but received " + describe(v));
  return v.As<Napi::TypedArrayOf<float>>();
}

int64_t size_arg(const Napi::Value& v, const std::string& name, int64_t min = 0) {
  Napi::Env env = v.Env();
  if (!v.IsNumber()) type_error(env, "Expected " + name + " to be an integer but received " + describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == std::floor(d)) || d < static_cast<double>(min) || d > kMaxSize)
    range_error(env, "Expected " + name + " to be an integer in [" + std::to_string(min) + ", 2147483647] but received " + num(d));
  return static_cast<int64_t>(d);
}

bool bool_arg(const Napi::Value& v, const char* name) {
  if (!v.IsBoolean()) type_error(v.Env(), std::string("Expected ") + name + " to be a boolean but received " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

double number_arg(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) type_error(v.Env(), std::string("Expected ") + name + " to be a number but received " + describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

Napi::Object object_arg(const Napi::Value& v, const char* name) {
  if (!v.IsObject() || v.IsTypedArray() || v.IsArray())
    type_error(v.Env(), std::string("Expected ") + name + " to be a geometry object but received " + describe(v));
  return v.As<Napi::Object>();
}

ConvShape conv_shape(const Napi::Value& v) {
  Napi::Object g = object_arg(v, "g");
  auto f = [&](const char* key, int64_t min = 0) { return size_arg(g.Get(key), std::string("g.") + key, min); };
  return ConvShape{f("n"),       f("cIn"),     f("h"),    f("w"),    f("cOut"), f("kh"),  f("kw"),
                   f("strideH", 1), f("strideW", 1), f("padH"), f("padW"), f("outH"), f("outW")};
}

PoolShape pool_shape(const Napi::Value& v) {
  Napi::Object g = object_arg(v, "g");
  auto f = [&](const char* key, int64_t min = 0) { return size_arg(g.Get(key), std::string("g.") + key, min); };
  return PoolShape{f("n"),           f("c"),    f("h"),    f("w"),    f("kh"),   f("kw"),
                   f("strideH", 1), f("strideW", 1), f("padH"), f("padW"), f("outH"), f("outW")};
}

struct ConvLengths {
  int64_t x, w, y, kdim, workspace;
};

ConvLengths conv_lengths(Napi::Env env, const ConvShape& s) {
  ConvLengths l;
  l.x = checked_mul(env, "x", {s.n, s.c_in, s.h, s.w});
  l.kdim = checked_mul(env, "w", {s.c_in, s.kh, s.kw});
  l.w = checked_mul(env, "w", {s.c_out, l.kdim});
  l.y = checked_mul(env, "y", {s.n, s.c_out, s.out_h, s.out_w});
  l.workspace = checked_mul(env, "the im2col workspace", {l.kdim, s.out_h, s.out_w});
  if (l.workspace > kMaxWorkspace)
    range_error(env, "Expected an im2col workspace of at most 2^28 floats (1 GiB) but this geometry needs " +
                         std::to_string(l.workspace) + "; hint: check kh, kw, outH and outW");
  return l;
}

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  expect_args(info, 9);
  Napi::Env env = info.Env();
  const int64_t m = size_arg(info[3], "m"), n = size_arg(info[4], "n"), k = size_arg(info[5], "k");
  const bool ta = bool_arg(info[6], "transA"), tb = bool_arg(info[7], "transB");
  const double beta = number_arg(info[8], "beta");
  if (beta != 0.0 && beta != 1.0) range_error(env, "Expected beta to be 0 or 1 but received " + num(beta));
  float* c = f32(info[0], "C", checked_mul(env, "C", {m, n}));
  const float* a = f32(info[1], "A", checked_mul(env, "A", {m, k}));
  const float* b = f32(info[2], "B", checked_mul(env, "B", {k, n}));
  vgg::sgemm(c, n, a, ta ? m : k, b, tb ? k : n, m, n, k, ta, tb, static_cast<float>(beta));
  return env.Undefined();
}

// gemmPackB(b, n, k, transB): op(B) (k, n) packed for gemmPackedB, in a new 64-byte aligned Float32Array
// that the addon allocates (the kernel's aligned loads need it) and frees when it is collected.
Napi::Value GemmPackB(const Napi::CallbackInfo& info) {
  expect_args(info, 4);
  Napi::Env env = info.Env();
  const int64_t n = size_arg(info[1], "n"), k = size_arg(info[2], "k");
  const bool tb = bool_arg(info[3], "transB");
  const float* b = f32(info[0], "B", checked_mul(env, "B", {k, n}));
  const int64_t size = vgg::packed_b_size(n, k);
  checked_mul(env, "the packed B", {size, 4});
  const size_t bytes = (static_cast<size_t>(size) * sizeof(float) + 63) / 64 * 64;
  float* packed = static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
  if (!packed) range_error(env, "Expected memory for a packed B of " + std::to_string(size) + " floats but the allocation failed");
  vgg::pack_b_all(packed, b, tb ? k : n, tb, n, k);
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes));
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, packed, static_cast<size_t>(size) * sizeof(float),
                                                    [bytes](Napi::Env e, void* data) {
                                                      std::free(data);
                                                      Napi::MemoryManagement::AdjustExternalMemory(e, -static_cast<int64_t>(bytes));
                                                    });
  return Napi::Float32Array::New(env, static_cast<size_t>(size), buffer, 0);
}

// gemmPackedB(c, a, packed, m, n, k, beta): C = A x B + beta * C with B as packed by gemmPackB(.., n, k, ..).
Napi::Value GemmPackedB(const Napi::CallbackInfo& info) {
  expect_args(info, 7);
  Napi::Env env = info.Env();
  const int64_t m = size_arg(info[3], "m"), n = size_arg(info[4], "n"), k = size_arg(info[5], "k");
  const double beta = number_arg(info[6], "beta");
  if (beta != 0.0 && beta != 1.0) range_error(env, "Expected beta to be 0 or 1 but received " + num(beta));
  float* c = f32(info[0], "C", checked_mul(env, "C", {m, n}));
  const float* a = f32(info[1], "A", checked_mul(env, "A", {m, k}));
  checked_mul(env, "the packed B", {(n + vgg::kGemmNR - 1) / vgg::kGemmNR * vgg::kGemmNR, k});
  const float* packed = f32(info[2], "packed", vgg::packed_b_size(n, k));
  if (reinterpret_cast<uintptr_t>(packed) % 32 != 0)
    range_error(env, "Expected packed to be a 32-byte aligned array made by gemmPackB but received one at a misaligned address");
  vgg::sgemm_packed_b(c, n, a, k, packed, m, n, k, static_cast<float>(beta));
  return env.Undefined();
}

// The convolutions' checked arguments, shared by the float32 entry points and their bf16 twins.
struct ConvForwardArgs {
  ConvShape s;
  ConvLengths l;
  float* y;
  const float* x;
  const float* w;
  const float* bias;
  bool relu;
};

// (y, x, w, bias, g, relu)
ConvForwardArgs conv_forward_args(const Napi::CallbackInfo& info) {
  expect_args(info, 6);
  ConvForwardArgs a;
  a.s = conv_shape(info[4]);
  a.l = conv_lengths(info.Env(), a.s);
  a.y = f32(info[0], "y", a.l.y);
  a.x = f32(info[1], "x", a.l.x);
  a.w = f32(info[2], "w", a.l.w);
  a.bias = f32_or_null(info[3], "bias", a.s.c_out);
  a.relu = bool_arg(info[5], "relu");
  return a;
}

// Elements of the 2x2 stride-2 pool of the conv's output (n, cOut, outH / 2, outW / 2), whose argmax
// indexes the (outH, outW) plane as an int32.
int64_t pooled_length(Napi::Env env, const ConvShape& s, const char* name) {
  if (checked_mul(env, name, {s.out_h, s.out_w}) > INT32_MAX)
    range_error(env, "Expected outH * outW to fit an Int32Array index but received " + std::to_string(s.out_h * s.out_w));
  return checked_mul(env, name, {s.n, s.c_out, s.out_h / 2, s.out_w / 2});
}

struct ConvPoolArgs {
  ConvShape s;
  int64_t pooled;
  float* y;
  int32_t* argmax;
  const float* x;
  const float* w;
  const float* bias;
};

// (y, argmax, x, w, bias, g): y and argmax hold the 2x2 stride-2 pool of the conv's output.
ConvPoolArgs conv_pool_args(const Napi::CallbackInfo& info) {
  expect_args(info, 6);
  Napi::Env env = info.Env();
  ConvPoolArgs a;
  a.s = conv_shape(info[5]);
  const ConvShape& s = a.s;
  const ConvLengths l = conv_lengths(env, s);
  a.pooled = pooled_length(env, s, "y");
  a.y = f32(info[0], "y", a.pooled);
  a.argmax = i32(info[1], "argmax", a.pooled);
  a.x = f32(info[2], "x", l.x);
  a.w = f32(info[3], "w", l.w);
  a.bias = f32_or_null(info[4], "bias", s.c_out);
  return a;
}

struct ConvInputGradArgs {
  ConvShape s;
  ConvLengths l;
  float* dx;
  const float* dy;
  const float* w;
  const float* relu_x;
};

// (dx, dy, w, g, reluMask)
ConvInputGradArgs conv_input_grad_args(const Napi::CallbackInfo& info) {
  expect_args(info, 5);
  ConvInputGradArgs a;
  a.s = conv_shape(info[3]);
  a.l = conv_lengths(info.Env(), a.s);
  a.dx = f32(info[0], "dx", a.l.x);
  a.dy = f32(info[1], "dy", a.l.y);
  a.w = f32(info[2], "w", a.l.w);
  a.relu_x = f32_or_null(info[4], "reluMask", a.l.x);
  return a;
}

struct ConvWeightGradArgs {
  ConvShape s;
  ConvLengths l;
  float* dw;
  float* db;
  const float* dy;
  const float* x;
};

// (dw, db, dy, x, g)
ConvWeightGradArgs conv_weight_grad_args(const Napi::CallbackInfo& info) {
  expect_args(info, 5);
  ConvWeightGradArgs a;
  a.s = conv_shape(info[4]);
  a.l = conv_lengths(info.Env(), a.s);
  a.dw = f32(info[0], "dw", a.l.w);
  a.db = f32_or_null(info[1], "db", a.s.c_out);
  a.dy = f32(info[2], "dy", a.l.y);
  a.x = f32(info[3], "x", a.l.x);
  return a;
}

Napi::Value Conv2dForward(const Napi::CallbackInfo& info) {
  const ConvForwardArgs a = conv_forward_args(info);
  if (a.l.y > 0) vgg::conv2d_forward(a.y, a.x, a.w, a.bias, a.s, a.relu);
  return info.Env().Undefined();
}

// conv2dReluMaxPool2dForward(y, argmax, x, w, bias, g): the pooled (kernel 2, stride 2) ReLU'd conv, or
// false when the geometry's kernel has no pooled epilogue (nothing is written then).
Napi::Value Conv2dReluMaxPool2dForward(const Napi::CallbackInfo& info) {
  const ConvPoolArgs a = conv_pool_args(info);
  return Napi::Boolean::New(info.Env(),
                            a.pooled > 0 && vgg::conv2d_relu_pool_forward(a.y, a.argmax, a.x, a.w, a.bias, a.s));
}

Napi::Value Conv2dBackwardInput(const Napi::CallbackInfo& info) {
  const ConvInputGradArgs a = conv_input_grad_args(info);
  if (a.l.x > 0) vgg::conv2d_backward_input(a.dx, a.dy, a.w, a.relu_x, a.s);
  return info.Env().Undefined();
}

Napi::Value Conv2dBackwardWeight(const Napi::CallbackInfo& info) {
  const ConvWeightGradArgs a = conv_weight_grad_args(info);
  vgg::conv2d_backward_weight(a.dw, a.db, a.dy, a.x, a.s);
  return info.Env().Undefined();
}

// conv2dReluMaxPool2dBackwardWeight(dw, db, dy, argmax, reluY, x, g): the weight and bias gradients of the
// fused conv + ReLU + pool from its pooled gradient, argmax and output; false (nothing written) where the
// geometry's weight gradient is not the few-taps kernel.
Napi::Value Conv2dReluMaxPool2dBackwardWeight(const Napi::CallbackInfo& info) {
  expect_args(info, 7);
  Napi::Env env = info.Env();
  const ConvShape s = conv_shape(info[6]);
  const ConvLengths l = conv_lengths(env, s);
  const int64_t pooled = pooled_length(env, s, "dy");
  float* dw = f32(info[0], "dw", l.w);
  float* db = f32_or_null(info[1], "db", s.c_out);
  const float* dy = f32(info[2], "dy", pooled);
  const int32_t* argmax = i32(info[3], "argmax", pooled);
  const float* relu_y = f32_or_null(info[4], "reluY", pooled);
  const float* x = f32(info[5], "x", l.x);
  return Napi::Boolean::New(env, pooled > 0 && vgg::conv2d_pool_backward_weight(dw, db, dy, argmax, relu_y, x, s));
}

Napi::Value MaxPool2dForward(const Napi::CallbackInfo& info) {
  expect_args(info, 4);
  Napi::Env env = info.Env();
  const PoolShape s = pool_shape(info[3]);
  const int64_t y_len = checked_mul(env, "y", {s.n, s.c, s.out_h, s.out_w});
  if (checked_mul(env, "x", {s.h, s.w}) > INT32_MAX)
    range_error(env, "Expected h * w to fit an Int32Array index but received " + std::to_string(s.h * s.w));
  float* y = f32(info[0], "y", y_len);
  int32_t* argmax = i32(info[1], "argmax", y_len);
  const float* x = f32(info[2], "x", checked_mul(env, "x", {s.n, s.c, s.h, s.w}));
  vgg::max_pool2d_forward(y, argmax, x, s);
  return env.Undefined();
}

Napi::Value MaxPool2dBackward(const Napi::CallbackInfo& info) {
  expect_args(info, 5);
  Napi::Env env = info.Env();
  const PoolShape s = pool_shape(info[3]);
  const int64_t y_len = checked_mul(env, "dy", {s.n, s.c, s.out_h, s.out_w});
  float* dx = f32(info[0], "dx", checked_mul(env, "dx", {s.n, s.c, s.h, s.w}));
  const float* dy = f32(info[1], "dy", y_len);
  const int32_t* argmax = i32(info[2], "argmax", y_len);
  const float* relu_y = f32_or_null(info[4], "reluOut", y_len);
  vgg::max_pool2d_backward(dx, dy, argmax, relu_y, s);
  return env.Undefined();
}

Napi::Value Relu(const Napi::CallbackInfo& info) {
  expect_args(info, 2);
  auto x = f32_any(info[1], "x");
  float* y = f32(info[0], "y", x.ElementLength());
  vgg::relu_forward(y, x.Data(), x.ElementLength());
  return info.Env().Undefined();
}

Napi::Value ReluBackward(const Napi::CallbackInfo& info) {
  expect_args(info, 3);
  auto y = f32_any(info[2], "y");
  const int64_t len = y.ElementLength();
  float* dx = f32(info[0], "dx", len);
  const float* dy = f32(info[1], "dy", len);
  vgg::relu_backward(dx, dy, y.Data(), len);
  return info.Env().Undefined();
}

Napi::Value Mul(const Napi::CallbackInfo& info) {
  expect_args(info, 3);
  auto x = f32_any(info[1], "x");
  const int64_t len = x.ElementLength();
  float* y = f32(info[0], "y", len);
  const float* mask = f32(info[2], "mask", len);
  vgg::mul(y, x.Data(), mask, len);
  return info.Env().Undefined();
}

// dropoutMask(mask, p, keep, state): state is the generator's 4-word Uint32Array, advanced in place.
Napi::Value DropoutMask(const Napi::CallbackInfo& info) {
  expect_args(info, 4);
  Napi::Env env = info.Env();
  auto mask = f32_any(info[0], "mask");
  const double p = number_arg(info[1], "p"), keep = number_arg(info[2], "keep");
  if (!(p >= 0.0 && p <= 1.0)) range_error(env, "Expected p to be a probability in [0, 1] but received " + num(p));
  if (!std::isfinite(keep)) range_error(env, "Expected keep to be a finite number but received " + num(keep));
  uint32_t* state = typed<uint32_t, napi_uint32_array>(info[3], "state", "Uint32Array", 4);
  vgg::dropout_mask(mask.Data(), static_cast<int64_t>(mask.ElementLength()), p, static_cast<float>(keep), state);
  return env.Undefined();
}

Napi::Value AddInPlace(const Napi::CallbackInfo& info) {
  expect_args(info, 2);
  auto y = f32_any(info[0], "y");
  const float* x = f32(info[1], "x", y.ElementLength());
  vgg::add_inplace(y.Data(), x, y.ElementLength());
  return info.Env().Undefined();
}

Napi::Value AddRowBias(const Napi::CallbackInfo& info) {
  expect_args(info, 4);
  Napi::Env env = info.Env();
  const int64_t rows = size_arg(info[2], "rows"), cols = size_arg(info[3], "cols");
  float* y = f32(info[0], "y", checked_mul(env, "y", {rows, cols}));
  const float* bias = f32(info[1], "bias", cols);
  vgg::add_row_bias(y, bias, rows, cols);
  return env.Undefined();
}

Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info) {
  expect_args(info, 5);
  Napi::Env env = info.Env();
  const int64_t n = size_arg(info[3], "n"), c = size_arg(info[4], "c");
  const int64_t len = checked_mul(env, "logits", {n, c});
  float* dlogits = f32(info[0], "dlogits", len);
  const float* logits = f32(info[1], "logits", len);
  const int32_t* targets = i32(info[2], "targets", n);
  for (int64_t i = 0; i < n; i++)
    if (targets[i] < 0 || targets[i] >= c)
      range_error(env, "Expected target class in [0, " + std::to_string(c) + ") but received " + std::to_string(targets[i]));
  return Napi::Number::New(env, vgg::softmax_cross_entropy(dlogits, logits, targets, n, c));
}

Napi::Value BatchNormForwardTrain(const Napi::CallbackInfo& info) {
  expect_args(info, 11);
  Napi::Env env = info.Env();
  const int64_t n = size_arg(info[6], "n"), c = size_arg(info[7], "c"), hw = size_arg(info[8], "hw");
  const double eps = number_arg(info[9], "eps");
  const bool relu = bool_arg(info[10], "relu");
  if (!(eps >= 0.0)) range_error(env, "Expected eps >= 0 but received " + num(eps));
  const int64_t len = checked_mul(env, "x", {n, c, hw});
  float* y = f32(info[0], "y", len);
  float* mean = f32(info[1], "saveMean", c);
  float* inv_std = f32(info[2], "saveInvStd", c);
  const float* x = f32(info[3], "x", len);
  const float* gamma = f32(info[4], "gamma", c);
  const float* beta = f32(info[5], "beta", c);
  vgg::batch_norm_forward_train(y, mean, inv_std, x, gamma, beta, n, c, hw, eps, relu);
  return env.Undefined();
}

Napi::Value ChannelAffine(const Napi::CallbackInfo& info) {
  expect_args(info, 8);
  Napi::Env env = info.Env();
  const int64_t n = size_arg(info[4], "n"), c = size_arg(info[5], "c"), hw = size_arg(info[6], "hw");
  const bool relu = bool_arg(info[7], "relu");
  const int64_t len = checked_mul(env, "x", {n, c, hw});
  float* y = f32(info[0], "y", len);
  const float* x = f32(info[1], "x", len);
  const float* scale = f32(info[2], "scale", c);
  const float* shift = f32(info[3], "shift", c);
  vgg::channel_affine(y, x, scale, shift, n, c, hw, relu);
  return env.Undefined();
}

Napi::Value BatchNormBackward(const Napi::CallbackInfo& info) {
  expect_args(info, 11);
  Napi::Env env = info.Env();
  const int64_t n = size_arg(info[8], "n"), c = size_arg(info[9], "c"), hw = size_arg(info[10], "hw");
  const int64_t len = checked_mul(env, "x", {n, c, hw});
  float* dx = f32(info[0], "dx", len);
  float* dgamma = f32(info[1], "dgamma", c);
  float* dbeta = f32(info[2], "dbeta", c);
  const float* dy = f32(info[3], "dy", len);
  const float* x = f32(info[4], "x", len);
  const float* gamma = f32(info[5], "gamma", c);
  const float* mean = f32(info[6], "saveMean", c);
  const float* inv_std = f32(info[7], "saveInvStd", c);
  vgg::batch_norm_backward(dx, dgamma, dbeta, dy, x, gamma, mean, inv_std, n, c, hw);
  return env.Undefined();
}

Napi::Value SgdStep(const Napi::CallbackInfo& info) {
  expect_args(info, 4);
  Napi::Env env = info.Env();
  auto param = f32_any(info[0], "param");
  const int64_t len = param.ElementLength();
  const float* grad = f32(info[1], "grad", len);
  float* buf = f32_or_null(info[2], "momentum buffer", len);
  Napi::Object o = object_arg(info[3], "options");
  vgg::SgdParams p{number_arg(o.Get("lr"), "options.lr"),
                   number_arg(o.Get("momentum"), "options.momentum"),
                   number_arg(o.Get("dampening"), "options.dampening"),
                   number_arg(o.Get("weightDecay"), "options.weightDecay"),
                   bool_arg(o.Get("nesterov"), "options.nesterov"),
                   bool_arg(o.Get("firstStep"), "options.firstStep")};
  if (p.momentum != 0.0 && buf == nullptr) type_error(env, "Expected a momentum buffer when momentum > 0");
  vgg::sgd_step(param.Data(), grad, buf, len, p);
  return env.Undefined();
}

Napi::Value SetConvAlgorithm(const Napi::CallbackInfo& info) {
  expect_args(info, 1);
  const std::string name = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (name == "auto") vgg::set_conv_algorithm(vgg::ConvAlgorithm::Auto);
  else if (name == "direct") vgg::set_conv_algorithm(vgg::ConvAlgorithm::Direct);
  else if (name == "winograd") vgg::set_conv_algorithm(vgg::ConvAlgorithm::Winograd);
  else if (name == "winograd4") vgg::set_conv_algorithm(vgg::ConvAlgorithm::Winograd4);
  else type_error(info.Env(), "Expected the conv algorithm to be \"auto\", \"direct\", \"winograd\" or \"winograd4\" but received " + (info[0].IsString() ? "\"" + name + "\"" : describe(info[0])));
  return info.Env().Undefined();
}

Napi::Value ConvKernel(const Napi::CallbackInfo& info) {
  expect_args(info, 2);
  const ConvShape s = conv_shape(info[0]);
  return Napi::String::New(info.Env(), vgg::conv_kernel_name(s, bool_arg(info[1], "backward")));
}

Napi::Value ConvWeightKernel(const Napi::CallbackInfo& info) {
  expect_args(info, 1);
  return Napi::String::New(info.Env(), vgg::conv_weight_kernel_name(conv_shape(info[0])));
}

Napi::Value NumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), vgg::num_threads()); }

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  expect_args(info, 1);
  const int64_t n = size_arg(info[0], "the thread count", 1);
  if (n > kMaxThreads)
    range_error(info.Env(), "Expected the thread count to be at most " + std::to_string(kMaxThreads) + " but received " + std::to_string(n));
  vgg::set_num_threads(static_cast<int>(n));
  return info.Env().Undefined();
}

constexpr int64_t kMaxIdleSpinUs = 1000000;  // a second: beyond it a pool would never sleep in practice

Napi::Value SetIdleSpin(const Napi::CallbackInfo& info) {
  expect_args(info, 1);
  const int64_t us = size_arg(info[0], "the idle spin in microseconds", 0);
  if (us > kMaxIdleSpinUs)
    range_error(info.Env(), "Expected the idle spin to be at most " + std::to_string(kMaxIdleSpinUs) +
                                " microseconds but received " + std::to_string(us));
  vgg::set_idle_spin_us(us);
  return info.Env().Undefined();
}

Napi::Value MarkCoresBusy(const Napi::CallbackInfo& info) {
  expect_args(info, 1);
  vgg::mark_cores_busy(bool_arg(info[0], "the cores' busy mark"));
  return info.Env().Undefined();
}

// decodePng(bytes, maxPixels, grey): the PNG's float planes (png.h), or null for a file it does not take.
Napi::Value DecodePng(const Napi::CallbackInfo& info) {
  expect_args(info, 3);
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    type_error(env, "Expected bytes to be a Uint8Array but received " + describe(info[0]));
  const double max_pixels = number_arg(info[1], "maxPixels");
  if (!(max_pixels >= 0)) range_error(env, "Expected maxPixels to be a number >= 0 but received " + num(max_pixels));
  const bool grey = bool_arg(info[2], "grey");
  auto bytes = info[0].As<Napi::Uint8Array>();
  vgg::PngInfo png;
  if (!vgg::png_probe(bytes.Data(), bytes.ElementLength(), max_pixels, &png)) return env.Null();
  const size_t count = size_t{png.width} * png.height * (grey ? 1 : 3);
  auto out = Napi::Float32Array::New(env, count);
  if (!vgg::png_decode(bytes.Data(), png, grey, out.Data())) return env.Null();
  return out;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", vgg::isa_name(vgg::active_isa()));
  o.Set("bestIsa", vgg::isa_name(vgg::best_isa()));
  Napi::Array features = Napi::Array::New(env);
  const std::pair<vgg::Feature, const char*> names[] = {
      {vgg::Feature::Avx2, "avx2"},         {vgg::Feature::Fma, "fma"},
      {vgg::Feature::Avx512F, "avx512f"},   {vgg::Feature::Avx512BW, "avx512bw"},
      {vgg::Feature::Avx512VL, "avx512vl"}, {vgg::Feature::Avx512DQ, "avx512dq"},
      {vgg::Feature::Avx512Bf16, "avx512_bf16"}, {vgg::Feature::AmxTile, "amx-tile"},
      {vgg::Feature::AmxBf16, "amx-bf16"}};
  uint32_t nf = 0;
  for (const auto& [f, name] : names)
    if (vgg::cpu_has(f)) features.Set(nf++, name);
  o.Set("cpuFeatures", features);
  o.Set("cpuHasAvx2Fma", vgg::cpu_has(vgg::Feature::Avx2) && vgg::cpu_has(vgg::Feature::Fma));
  o.Set("threads", vgg::num_threads());
  std::string gemm = vgg::gemm_kernel_name();
  if (vgg::sparse_gemm_enabled())
    gemm += "; A with at most " + std::to_string(static_cast<int>(vgg::sparse_gemm_max_density() * 100 + 0.5)) +
            "% nonzeros: " + vgg::sparse_gemm_kernel_name();
  else
    gemm += "; sparse A path off (VGG_SPARSE_GEMM=0)";
  o.Set("gemmKernel", gemm);
  Napi::Object kernels = Napi::Object::New(env);
  kernels.Set("gemm", vgg::gemm_kernel_name());
  kernels.Set("sparseGemm", vgg::sparse_gemm_kernel_name());
  kernels.Set("winogradTransforms", vgg::winograd_kernel_name());
  kernels.Set("directConv", vgg::direct_conv_kernel_name());
  kernels.Set("maxPool", vgg::max_pool_kernel_name());
  kernels.Set("batchNorm", vgg::batch_norm_kernel_name());
  kernels.Set("elementwise", vgg::elementwise_kernel_name());
  kernels.Set("sgd", vgg::sgd_kernel_name());
  o.Set("kernels", kernels);
  o.Set("sparseGemmCalls", static_cast<double>(vgg::sparse_gemm_calls()));
  o.Set("kernelCache", vgg::kernel_cache_path());
  return o;
}

// ---- bf16 mixed precision (native/bf16.h) ----

// roundBf16(y, x): y = x rounded to bf16 (held as float32); y may be x.
Napi::Value RoundBf16(const Napi::CallbackInfo& info) {
  expect_args(info, 2);
  auto x = f32_any(info[1], "x");
  float* y = f32(info[0], "y", x.ElementLength());
  vgg::round_to_bf16(y, x.Data(), static_cast<int64_t>(x.ElementLength()));
  return info.Env().Undefined();
}

// gemmBf16(c, a, b, m, n, k, transA, transB, beta): gemm's arguments; op(A) and op(B) rounded to bf16.
Napi::Value GemmBf16(const Napi::CallbackInfo& info) {
  expect_args(info, 9);
  Napi::Env env = info.Env();
  const int64_t m = size_arg(info[3], "m"), n = size_arg(info[4], "n"), k = size_arg(info[5], "k");
  const bool ta = bool_arg(info[6], "transA"), tb = bool_arg(info[7], "transB");
  const double beta = number_arg(info[8], "beta");
  if (beta != 0.0 && beta != 1.0) range_error(env, "Expected beta to be 0 or 1 but received " + num(beta));
  float* c = f32(info[0], "C", checked_mul(env, "C", {m, n}));
  const float* a = f32(info[1], "A", checked_mul(env, "A", {m, k}));
  const float* b = f32(info[2], "B", checked_mul(env, "B", {k, n}));
  try {
    vgg::bf16_gemm(c, n, a, ta ? m : k, b, tb ? k : n, m, n, k, ta, tb, static_cast<float>(beta));
  } catch (const std::bad_alloc&) {
    range_error(env, "Expected memory for the bf16 GEMM's packed panels but the allocation failed");
  }
  return env.Undefined();
}

// conv2dForwardBf16(y, x, w, bias, g, relu), conv2dBackwardInputBf16(dx, dy, w, g, reluMask) and
// conv2dBackwardWeightBf16(dw, db, dy, x, g): the float32 convolutions' arguments, computed with x, w and dy
// rounded to bf16; each returns false, writing nothing, where the geometry has no bf16 kernel.
Napi::Value Conv2dForwardBf16(const Napi::CallbackInfo& info) {
  const ConvForwardArgs a = conv_forward_args(info);
  return Napi::Boolean::New(info.Env(), a.l.y > 0 && vgg::conv2d_forward_bf16(a.y, a.x, a.w, a.bias, a.s, a.relu));
}

// conv2dReluMaxPool2dForwardBf16(y, argmax, x, w, bias, g): conv2dReluMaxPool2dForward's arguments, bf16.
Napi::Value Conv2dReluMaxPool2dForwardBf16(const Napi::CallbackInfo& info) {
  const ConvPoolArgs a = conv_pool_args(info);
  return Napi::Boolean::New(
      info.Env(), a.pooled > 0 && vgg::conv2d_relu_pool_forward_bf16(a.y, a.argmax, a.x, a.w, a.bias, a.s));
}

Napi::Value Conv2dBackwardInputBf16(const Napi::CallbackInfo& info) {
  const ConvInputGradArgs a = conv_input_grad_args(info);
  return Napi::Boolean::New(info.Env(),
                            a.l.x > 0 && vgg::conv2d_backward_input_bf16(a.dx, a.dy, a.w, a.relu_x, a.s));
}

Napi::Value Conv2dBackwardWeightBf16(const Napi::CallbackInfo& info) {
  const ConvWeightGradArgs a = conv_weight_grad_args(info);
  return Napi::Boolean::New(info.Env(), a.l.w > 0 && vgg::conv2d_backward_weight_bf16(a.dw, a.db, a.dy, a.x, a.s));
}

// bf16Path(): "amx" (TDPBF16PS), "avx512bf16" (VDPBF16PS) or "emulation" (VGG_BF16=emulate forces it).
Napi::Value Bf16Path(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), vgg::bf16_path_name(vgg::bf16_path()));
}

void register_bf16(Napi::Env env, Napi::Object exports) {
  exports.Set("roundBf16", Napi::Function::New(env, RoundBf16));
  exports.Set("gemmBf16", Napi::Function::New(env, GemmBf16));
  exports.Set("bf16Path", Napi::Function::New(env, Bf16Path));
  exports.Set("conv2dForwardBf16", Napi::Function::New(env, Conv2dForwardBf16));
  exports.Set("conv2dBackwardInputBf16", Napi::Function::New(env, Conv2dBackwardInputBf16));
  exports.Set("conv2dReluMaxPool2dForwardBf16", Napi::Function::New(env, Conv2dReluMaxPool2dForwardBf16));
  exports.Set("conv2dBackwardWeightBf16", Napi::Function::New(env, Conv2dBackwardWeightBf16));
}

// ---- end of bf16 ----

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // A level VGG_NATIVE_ISA asks for that the CPU lacks: fail the load with the reason, run nothing.
  if (!vgg::isa_error().empty()) throw Napi::Error::New(env, vgg::isa_error());
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("gemmPackB", Napi::Function::New(env, GemmPackB));
  exports.Set("gemmPackedB", Napi::Function::New(env, GemmPackedB));
  exports.Set("conv2dForward", Napi::Function::New(env, Conv2dForward));
  exports.Set("conv2dReluMaxPool2dForward", Napi::Function::New(env, Conv2dReluMaxPool2dForward));
  exports.Set("conv2dBackwardInput", Napi::Function::New(env, Conv2dBackwardInput));
  exports.Set("conv2dBackwardWeight", Napi::Function::New(env, Conv2dBackwardWeight));
  exports.Set("conv2dReluMaxPool2dBackwardWeight", Napi::Function::New(env, Conv2dReluMaxPool2dBackwardWeight));
  exports.Set("maxPool2dForward", Napi::Function::New(env, MaxPool2dForward));
  exports.Set("maxPool2dBackward", Napi::Function::New(env, MaxPool2dBackward));
  exports.Set("relu", Napi::Function::New(env, Relu));
  exports.Set("reluBackward", Napi::Function::New(env, ReluBackward));
  exports.Set("mul", Napi::Function::New(env, Mul));
  exports.Set("dropoutMask", Napi::Function::New(env, DropoutMask));
  exports.Set("addInPlace", Napi::Function::New(env, AddInPlace));
  exports.Set("addRowBias", Napi::Function::New(env, AddRowBias));
  exports.Set("softmaxCrossEntropy", Napi::Function::New(env, SoftmaxCrossEntropy));
  exports.Set("batchNormForwardTrain", Napi::Function::New(env, BatchNormForwardTrain));
  exports.Set("channelAffine", Napi::Function::New(env, ChannelAffine));
  exports.Set("batchNormBackward", Napi::Function::New(env, BatchNormBackward));
  exports.Set("sgdStep", Napi::Function::New(env, SgdStep));
  exports.Set("setConvAlgorithm", Napi::Function::New(env, SetConvAlgorithm));
  exports.Set("convKernel", Napi::Function::New(env, ConvKernel));
  exports.Set("convWeightKernel", Napi::Function::New(env, ConvWeightKernel));
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("setIdleSpin", Napi::Function::New(env, SetIdleSpin));
  exports.Set("markCoresBusy", Napi::Function::New(env, MarkCoresBusy));
  exports.Set("decodePng", Napi::Function::New(env, DecodePng));
  exports.Set("info", Napi::Function::New(env, Info));
  register_bf16(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(vgg_native, Init)
