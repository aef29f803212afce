// Launcher of the CUDA kernel of rvq_encode.cu, called by the torch glue in rvq_encode.cpp. Plain
// pointers and sizes, no torch or CUDA header; returns nullptr, or the CUDA error's message.
#pragma once

#include <cstdint>

namespace audiokit_cuda {

// codes (S, N) and quantized (N, D) of rows (N, D) through S stages: proj_w (S, D, d), proj_b (S, d),
// codebooks (S, K, d), offsets (S, K) float64; tables (S, K, D) float32; all contiguous
const char* rvq_encode(const float* rows, const double* proj_w, const double* proj_b, const double* codebooks,
                       const double* offsets, const float* tables, int64_t* codes, float* quantized, int64_t n,
                       int64_t dim, int64_t d, int64_t k, int64_t stages, void* stream);

}  // namespace audiokit_cuda
