// Launchers of the CUDA kernels of convnext_step.cu, called by the torch glue in convnext_step.cpp.
// Plain pointers and sizes, no torch or CUDA header: the glue compiles against any build of torch and
// the kernels with nvcc alone. Each launcher returns nullptr, or the CUDA error's message.
#pragma once

#include <cstdint>

namespace audiokit_cuda {

// conv + LayerNorm of x (B, n, C contiguous) into normed (B * n, C); state (B, K - 1, C), any strides
// (state_strides), updated in place to the last K - 1 rows of [state | x]; conv_bias may be null
const char* dwconv_layernorm_update(const float* x, float* state, const float* taps, const float* conv_bias,
                                    const float* norm_weight, const float* norm_bias, float* normed,
                                    int64_t batch, int64_t length, int64_t channels, int64_t kernel, float eps,
                                    const int64_t* state_strides, void* stream);

// h (rows, cols) in place: GELU(h + bias), the erf form or (tanh_form) the tanh one; bias may be null
const char* bias_gelu(float* h, const float* bias, int64_t rows, int64_t cols, bool tanh_form, void* stream);

// out (rows, cols) in place: out + bias + x, x contiguous (rows, cols); bias may be null
const char* bias_residual(float* out, const float* bias, const float* x, int64_t rows, int64_t cols,
                          void* stream);

}  // namespace audiokit_cuda
