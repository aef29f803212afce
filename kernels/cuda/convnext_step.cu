// The CUDA kernels of a ConvNeXt block's streaming step (audiokit.ops.convnext_block_step, backend
// "cuda"; the glue, with the two cuBLAS products between them, is convnext_step.cpp):
//   1. dwconv_layernorm_update: one block per stream, threads over channels, the stream's n frames in
//      order (causal depthwise conv, then LayerNorm by block reductions), then the state shift. Each
//      thread reads and writes only its own channels of the state (the conv is depthwise), so the
//      in-place update needs no barrier beyond the reductions'.
//   2. bias_gelu: the first product's epilogue, + b1 and GELU (erf or tanh form) in place.
//   3. bias_residual: the second product's epilogue, + b2 + x (the layer scale is folded into w2, b2).
// Only <cuda_runtime.h>: `nvcc -c` compiles it in seconds on a machine without a GPU (tests).
#include "convnext_step.h"

#include <cuda_runtime.h>

#include <algorithm>

namespace {

constexpr int kWarp = 32;
constexpr int kMaxThreads = 512;
constexpr int kElementwiseThreads = 256;

// sum of every thread's v, the same value in every thread; partial: kMaxThreads / kWarp floats
__device__ float block_sum(float v, float* partial) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __syncthreads();  // the previous call's readers are done with partial
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < (blockDim.x + kWarp - 1) / kWarp; ++w) total += partial[w];
  return total;
}

// grid (B): one block per stream; dynamic shared memory: C floats (the conv outputs of one frame)
__global__ void dwconv_layernorm_update_kernel(const float* __restrict__ x, float* state,
                                               const float* __restrict__ taps, const float* __restrict__ conv_bias,
                                               const float* __restrict__ norm_weight,
                                               const float* __restrict__ norm_bias, float* __restrict__ normed,
                                               int64_t length, int64_t channels, int64_t kernel, float eps,
                                               int64_t ssb, int64_t sst, int64_t ssc) {
  extern __shared__ float acc[];
  __shared__ float partial[kMaxThreads / kWarp];
  const int64_t b = blockIdx.x, history = kernel - 1;
  const float* xb = x + b * length * channels;
  float* sb = state + b * ssb;
  const float inv_c = 1.0f / static_cast<float>(channels);
  for (int64_t t = 0; t < length; ++t) {
    float sum = 0.0f;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      float a = conv_bias != nullptr ? conv_bias[c] : 0.0f;
      for (int64_t k = 0; k < kernel; ++k) {
        const int64_t row = t + k;  // row of [state | x]
        const float z = row < history ? sb[row * sst + c * ssc] : xb[(row - history) * channels + c];
        a = fmaf(taps[c * kernel + k], z, a);
      }
      acc[c] = a;
      sum += a;
    }
    const float mean = block_sum(sum, partial) * inv_c;
    float squares = 0.0f;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      const float d = acc[c] - mean;
      squares += d * d;
    }
    const float scale = rsqrtf(block_sum(squares, partial) * inv_c + eps);
    float* out = normed + (b * length + t) * channels;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x)
      out[c] = (acc[c] - mean) * scale * norm_weight[c] + norm_bias[c];
  }
  // new state row i = row length + i of [state | x]; ascending i reads rows not yet overwritten
  for (int64_t c = threadIdx.x; c < channels; c += blockDim.x)
    for (int64_t i = 0; i < history; ++i) {
      const int64_t row = length + i;
      sb[i * sst + c * ssc] = row < history ? sb[row * sst + c * ssc] : xb[(row - history) * channels + c];
    }
}

__global__ void bias_gelu_kernel(float* h, const float* __restrict__ bias, int64_t rows, int64_t cols,
                                 bool tanh_form) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = h[i] + (bias != nullptr ? bias[i % cols] : 0.0f);
    const float inner = tanh_form ? tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))
                                  : erff(v * 0.7071067811865476f);
    h[i] = 0.5f * v * (1.0f + inner);
  }
}

__global__ void bias_residual_kernel(float* out, const float* __restrict__ bias, const float* __restrict__ x,
                                     int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = out[i] + (bias != nullptr ? bias[i % cols] : 0.0f) + x[i];
}

int elementwise_blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kElementwiseThreads - 1) / kElementwiseThreads, 4096));
}

const char* launched() {
  const cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? nullptr : cudaGetErrorString(error);
}

}  // namespace

namespace audiokit_cuda {

const char* dwconv_layernorm_update(const float* x, float* state, const float* taps, const float* conv_bias,
                                    const float* norm_weight, const float* norm_bias, float* normed,
                                    int64_t batch, int64_t length, int64_t channels, int64_t kernel, float eps,
                                    const int64_t* state_strides, void* stream) {
  const int threads = static_cast<int>(std::clamp<int64_t>((channels + kWarp - 1) / kWarp * kWarp, kWarp, kMaxThreads));
  dwconv_layernorm_update_kernel<<<static_cast<unsigned>(batch), threads, channels * sizeof(float),
                                   static_cast<cudaStream_t>(stream)>>>(
      x, state, taps, conv_bias, norm_weight, norm_bias, normed, length, channels, kernel, eps, state_strides[0],
      state_strides[1], state_strides[2]);
  return launched();
}

const char* bias_gelu(float* h, const float* bias, int64_t rows, int64_t cols, bool tanh_form, void* stream) {
  bias_gelu_kernel<<<elementwise_blocks(rows * cols), kElementwiseThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      h, bias, rows, cols, tanh_form);
  return launched();
}

const char* bias_residual(float* out, const float* bias, const float* x, int64_t rows, int64_t cols,
                          void* stream) {
  bias_residual_kernel<<<elementwise_blocks(rows * cols), kElementwiseThreads, 0,
                         static_cast<cudaStream_t>(stream)>>>(out, bias, x, rows, cols);
  return launched();
}

}  // namespace audiokit_cuda
