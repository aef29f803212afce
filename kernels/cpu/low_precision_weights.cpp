// Products of float32 rows with float16 or int8 weights: the ops compiled streaming steps call for models
// whose prepared matrices are float16 or int8-grid values (audiokit.nn.precision). One stream's step reads
// every weight once per product, so fewer weight bytes means less time waiting on memory.
//
// audiokit::rows_times_half(rows (N, in) f32, weights (out, in) f16, bias (out,) f32 or None) -> (N, out)
// audiokit::rows_times_int8(rows (N, in) f32, weights (out, in) i8, scales (out,) f32, bias or None)
//     -> (N, out): output o is scales[o] * sum_k rows[k] * weights[o, k] (+ bias[o])
//
// Each output is a dot product summed in 8 lanes (fused multiply-adds over the inputs in order), the
// lanes added in a fixed order, then the inputs past the last multiple of 8 one by one, then the scale
// and the bias, so a row's result does not depend on N (rows are taken one or two at a time, each in its
// own accumulators). Registered with the dispatcher (TORCH_LIBRARY) so that AOTInductor libraries call
// them.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <optional>

namespace {

constexpr int64_t kMaxKernelRows = 8;  // more rows: float32 weights and the BLAS (arithmetic bound)
constexpr int64_t kOutputsPerBlock = 4;

// How each stored weight type becomes float32: one at a time, and eight at a time with AVX2.
struct HalfStored {
  using type = uint16_t;
  static float one(type w) { return static_cast<float>(c10::Half(w, c10::Half::from_bits())); }
  __attribute__((target("avx2,fma,f16c"))) static inline __m256 eight(const type* w) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  }
};

struct Int8Stored {
  using type = int8_t;
  static float one(type w) { return static_cast<float>(w); }
  __attribute__((target("avx2,fma,f16c"))) static inline __m256 eight(const type* w) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w))));
  }
};

// The end of every output: the scale (int8 weights; none for float16) and the bias.
float finish(float total, const float* scales, const float* bias, int64_t o) {
  if (scales) total *= scales[o];
  return total + (bias ? bias[o] : 0.f);
}

// Scalar reference of the vector kernel, with the same order of sums (8 lanes, tail, scale, bias).
template <typename S>
void dot_rows_scalar(const float* const* x, int rows, const typename S::type* w, int64_t in, const float* scales,
                     const float* bias, int64_t out_index, float* const* y) {
  for (int r = 0; r < rows; ++r) {
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= in; k += 8)
      for (int j = 0; j < 8; ++j) lanes[j] = std::fma(S::one(w[k + j]), x[r][k + j], lanes[j]);
    float total = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    for (; k < in; ++k) total = std::fma(S::one(w[k]), x[r][k], total);
    y[r][out_index] = finish(total, scales, bias, out_index);
  }
}

__attribute__((target("avx2,fma,f16c"))) float lanes_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // (0+4, 1+5, 2+6, 3+7)
  __m128 pairs = _mm_add_ps(s, _mm_movehl_ps(s, s));                           // (0+4)+(2+6), (1+5)+(3+7)
  return _mm_cvtss_f32(pairs) + _mm_cvtss_f32(_mm_shuffle_ps(pairs, pairs, 1));
}

// ROWS rows (1 or 2) times outputs [first, first + count) of w (count <= 4), AVX2 (+ F16C).
template <typename S, int ROWS>
__attribute__((target("avx2,fma,f16c"))) void dot_rows_avx2(const float* const* x, const typename S::type* w,
                                                            int64_t in, const float* scales, const float* bias,
                                                            int64_t first, int64_t count, float* const* y) {
  __m256 acc[ROWS][kOutputsPerBlock];
  for (int r = 0; r < ROWS; ++r)
    for (int o = 0; o < kOutputsPerBlock; ++o) acc[r][o] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    __m256 xv[ROWS];
    for (int r = 0; r < ROWS; ++r) xv[r] = _mm256_loadu_ps(x[r] + k);
    for (int o = 0; o < kOutputsPerBlock; ++o) {
      if (o >= count) break;
      const __m256 wv = S::eight(w + (first + o) * in + k);
      for (int r = 0; r < ROWS; ++r) acc[r][o] = _mm256_fmadd_ps(wv, xv[r], acc[r][o]);
    }
  }
  for (int o = 0; o < count; ++o) {
    const typename S::type* wrow = w + (first + o) * in;
    for (int r = 0; r < ROWS; ++r) {
      float total = lanes_sum(acc[r][o]);
      for (int64_t kk = k; kk < in; ++kk) total = std::fma(S::one(wrow[kk]), x[r][kk], total);
      y[r][first + o] = finish(total, scales, bias, first + o);
    }
  }
}

bool has_avx2_f16c() {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                __builtin_cpu_supports("f16c");
  return supported;
}

template <typename S>
void rows_block(const float* const* x, int rows, const typename S::type* w, int64_t in, const float* scales,
                const float* bias, int64_t first, int64_t count, float* const* y) {
  if (!has_avx2_f16c()) {
    for (int64_t o = first; o < first + count; ++o) dot_rows_scalar<S>(x, rows, w + o * in, in, scales, bias, o, y);
    return;
  }
  if (rows == 2)
    dot_rows_avx2<S, 2>(x, w, in, scales, bias, first, count, y);
  else
    dot_rows_avx2<S, 1>(x, w, in, scales, bias, first, count, y);
}

// Checks shared by both ops; returns the contiguous bias, if any.
std::optional<at::Tensor> checked_bias(const char* op, const at::Tensor& rows, const at::Tensor& weights,
                                       const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(rows.dim() == 2 && rows.scalar_type() == at::kFloat, op, ": rows must be (N, in) float32");
  TORCH_CHECK(weights.dim() == 2 && weights.size(1) == rows.size(1), op, ": weights must be (out, in) with in = ",
              rows.size(1));
  TORCH_CHECK(rows.device().is_cpu() && weights.device().is_cpu(), op, ": CPU tensors only");
  if (!bias.has_value() || !bias->defined()) return std::nullopt;
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weights.size(0) && bias->scalar_type() == at::kFloat, op,
              ": bias must be (out,) float32");
  return bias->contiguous();
}

template <typename S>
at::Tensor rows_times(const at::Tensor& rows, const at::Tensor& weights, const float* scales,
                      const std::optional<at::Tensor>& b) {
  const int64_t n = rows.size(0), in = rows.size(1), out = weights.size(0);
  const at::Tensor x = rows.contiguous();
  const at::Tensor w = weights.contiguous();
  at::Tensor y = at::empty({n, out}, rows.options());
  const auto* wp = reinterpret_cast<const typename S::type*>(w.data_ptr());
  const float* bp = b.has_value() ? b->data_ptr<float>() : nullptr;
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t blocks = (out + kOutputsPerBlock - 1) / kOutputsPerBlock;
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < n; r += 2) {
      const int take = n - r >= 2 ? 2 : 1;
      const float* xs[2] = {xp + r * in, xp + (r + take - 1) * in};
      float* ys[2] = {yp + r * out, yp + (r + take - 1) * out};
      for (int64_t block = begin; block < end; ++block) {
        const int64_t first = block * kOutputsPerBlock;
        rows_block<S>(xs, take, wp, in, scales, bp, first, std::min(kOutputsPerBlock, out - first), ys);
      }
    }
  });
  return y;
}

// More rows than the kernel takes: float32 weights (times the scales) and the BLAS.
at::Tensor blas_rows(const at::Tensor& rows, const at::Tensor& w32, const std::optional<at::Tensor>& b) {
  return b.has_value() ? at::addmm(*b, rows, w32.t()) : at::mm(rows, w32.t());
}

at::Tensor rows_times_half(const at::Tensor& rows, const at::Tensor& weights, const std::optional<at::Tensor>& bias) {
  const auto b = checked_bias("rows_times_half", rows, weights, bias);
  TORCH_CHECK(weights.scalar_type() == at::kHalf, "rows_times_half: weights must be float16");
  if (rows.size(0) > kMaxKernelRows) return blas_rows(rows, weights.to(at::kFloat), b);
  return rows_times<HalfStored>(rows, weights, nullptr, b);
}

at::Tensor rows_times_int8(const at::Tensor& rows, const at::Tensor& weights, const at::Tensor& scales,
                           const std::optional<at::Tensor>& bias) {
  const auto b = checked_bias("rows_times_int8", rows, weights, bias);
  TORCH_CHECK(weights.scalar_type() == at::kChar, "rows_times_int8: weights must be int8");
  TORCH_CHECK(scales.dim() == 1 && scales.size(0) == weights.size(0) && scales.scalar_type() == at::kFloat &&
                  scales.device().is_cpu(),
              "rows_times_int8: scales must be (out,) float32");
  const at::Tensor s = scales.contiguous();
  if (rows.size(0) > kMaxKernelRows) return blas_rows(rows, weights.to(at::kFloat) * s.unsqueeze(1), b);
  return rows_times<Int8Stored>(rows, weights, s.data_ptr<float>(), b);
}

}  // namespace

TORCH_LIBRARY(audiokit, m) {
  m.def("rows_times_half(Tensor rows, Tensor weights, Tensor? bias) -> Tensor");
  m.def("rows_times_int8(Tensor rows, Tensor weights, Tensor scales, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(audiokit, CPU, m) {
  m.impl("rows_times_half", &rows_times_half);
  m.impl("rows_times_int8", &rows_times_int8);
}
