// The CUDA kernel of the RVQ search (audiokit.ops.rvq_encode, backend "cuda"; glue: rvq_encode.cpp):
// one block per latent row, every stage in turn: the projection to the codebook's space (one thread per
// output, float64, inputs summed in order), the Euclidean nearest codeword (threads over codewords, a
// block argmin whose ties go to the lower index), then the float32 residual update and quantized sum in
// stage order, as audiokit.ops.reference.rvq_encode computes them.
// Only CUDA runtime headers: `nvcc -c` compiles it on a machine without a GPU (tests).
#include "rvq_encode.h"

#include <cuda_runtime.h>
#include <math_constants.h>

namespace {

constexpr int kThreads = 256;

// dynamic shared memory: dim floats (the residual), d doubles (the projection), kThreads (score, index)
__global__ void rvq_encode_kernel(const float* __restrict__ rows, const double* __restrict__ proj_w,
                                  const double* __restrict__ proj_b, const double* __restrict__ codebooks,
                                  const double* __restrict__ offsets, const float* __restrict__ tables,
                                  int64_t* __restrict__ codes, float* __restrict__ quantized, int64_t n,
                                  int64_t dim, int64_t d, int64_t k, int64_t stages) {
  extern __shared__ unsigned char shared[];
  double* z = reinterpret_cast<double*>(shared);
  double* best_score = z + d;
  int64_t* best_index = reinterpret_cast<int64_t*>(best_score + kThreads);
  float* residual = reinterpret_cast<float*>(best_index + kThreads);
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x;
  for (int64_t i = tid; i < dim; i += kThreads) {
    residual[i] = rows[row * dim + i];
    quantized[row * dim + i] = 0.0f;
  }
  __syncthreads();
  for (int64_t s = 0; s < stages; ++s) {
    const double* w = proj_w + s * dim * d;
    for (int64_t j = tid; j < d; j += kThreads) {
      double acc = 0.0;
      for (int64_t i = 0; i < dim; ++i) acc += static_cast<double>(residual[i]) * w[i * d + j];
      z[j] = acc + proj_b[s * d + j];
    }
    __syncthreads();
    double score = CUDART_INF;
    int64_t index = k;
    const double* words = codebooks + s * k * d;
    for (int64_t code = tid; code < k; code += kThreads) {  // ascending: strict < keeps the lower index
      double dot = 0.0;
      for (int64_t j = 0; j < d; ++j) dot += z[j] * words[code * d + j];
      const double value = offsets[s * k + code] - 2.0 * dot;
      if (value < score) {
        score = value;
        index = code;
      }
    }
    best_score[tid] = score;
    best_index[tid] = index;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (tid < half) {
        const double other = best_score[tid + half];
        const int64_t other_index = best_index[tid + half];
        if (other < best_score[tid] || (other == best_score[tid] && other_index < best_index[tid])) {
          best_score[tid] = other;
          best_index[tid] = other_index;
        }
      }
      __syncthreads();
    }
    const int64_t chosen = best_index[0];
    if (tid == 0) codes[s * n + row] = chosen;
    const float* stage = tables + (s * k + chosen) * dim;
    for (int64_t i = tid; i < dim; i += kThreads) {
      residual[i] -= stage[i];
      quantized[row * dim + i] += stage[i];
    }
    __syncthreads();  // the residual is complete before the next projection, best_* free again
  }
}

}  // namespace

namespace audiokit_cuda {

const char* rvq_encode(const float* rows, const double* proj_w, const double* proj_b, const double* codebooks,
                       const double* offsets, const float* tables, int64_t* codes, float* quantized, int64_t n,
                       int64_t dim, int64_t d, int64_t k, int64_t stages, void* stream) {
  if (n == 0 || stages == 0) return nullptr;
  const size_t bytes = (d + kThreads) * sizeof(double) + kThreads * sizeof(int64_t) + dim * sizeof(float);
  rvq_encode_kernel<<<static_cast<unsigned>(n), kThreads, bytes, static_cast<cudaStream_t>(stream)>>>(
      rows, proj_w, proj_b, codebooks, offsets, tables, codes, quantized, n, dim, d, k, stages);
  const cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? nullptr : cudaGetErrorString(error);
}

}  // namespace audiokit_cuda
