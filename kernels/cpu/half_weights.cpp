// Products of float32 rows with float16 weights: the op compiled streaming steps call for models whose
// prepared matrices are float16 values (audiokit.nn.precision). One stream's step reads every weight
// once per product, so halving the weight bytes halves the time the products wait on memory.
//
// audiokit::rows_times_half(rows (N, in) f32, weights (out, in) f16, bias (out,) f32 or None) -> (N, out)
//
// Each output is a dot product summed in 8 lanes (fused multiply-adds over the inputs in order), the
// lanes added in a fixed order, then the inputs past the last multiple of 8 one by one, then the bias,
// so a row's result does not depend on N (rows are taken one or two at a time, each in its own
// accumulators). Registered with the dispatcher (TORCH_LIBRARY) so that AOTInductor libraries call it.
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

float half_to_float(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

// Scalar reference of the vector kernel, with the same order of sums (8 lanes, tail, bias).
void dot_rows_scalar(const float* const* x, int rows, const uint16_t* w, int64_t in, const float* bias,
                     int64_t out_index, float* const* y) {
  for (int r = 0; r < rows; ++r) {
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= in; k += 8)
      for (int j = 0; j < 8; ++j) lanes[j] = std::fma(half_to_float(w[k + j]), x[r][k + j], lanes[j]);
    float total = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    for (; k < in; ++k) total = std::fma(half_to_float(w[k]), x[r][k], total);
    y[r][out_index] = total + (bias ? bias[out_index] : 0.f);
  }
}

__attribute__((target("avx2,fma,f16c"))) float lanes_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // (0+4, 1+5, 2+6, 3+7)
  __m128 pairs = _mm_add_ps(s, _mm_movehl_ps(s, s));                           // (0+4)+(2+6), (1+5)+(3+7)
  return _mm_cvtss_f32(pairs) + _mm_cvtss_f32(_mm_shuffle_ps(pairs, pairs, 1));
}

// ROWS rows (1 or 2) times outputs [first, first + count) of w (count <= 4), AVX2 + F16C.
template <int ROWS>
__attribute__((target("avx2,fma,f16c"))) void dot_rows_avx2(const float* const* x, const uint16_t* w, int64_t in,
                                                            const float* bias, int64_t first, int64_t count,
                                                            float* const* y) {
  __m256 acc[ROWS][kOutputsPerBlock];
  for (int r = 0; r < ROWS; ++r)
    for (int o = 0; o < kOutputsPerBlock; ++o) acc[r][o] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    __m256 xv[ROWS];
    for (int r = 0; r < ROWS; ++r) xv[r] = _mm256_loadu_ps(x[r] + k);
    for (int o = 0; o < kOutputsPerBlock; ++o) {
      if (o >= count) break;
      const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (first + o) * in + k)));
      for (int r = 0; r < ROWS; ++r) acc[r][o] = _mm256_fmadd_ps(wv, xv[r], acc[r][o]);
    }
  }
  for (int o = 0; o < count; ++o) {
    const uint16_t* wrow = w + (first + o) * in;
    for (int r = 0; r < ROWS; ++r) {
      float total = lanes_sum(acc[r][o]);
      for (int64_t kk = k; kk < in; ++kk) total = std::fma(_cvtsh_ss(wrow[kk]), x[r][kk], total);
      y[r][first + o] = total + (bias ? bias[first + o] : 0.f);
    }
  }
}

bool has_avx2_f16c() {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                __builtin_cpu_supports("f16c");
  return supported;
}

void rows_block(const float* const* x, int rows, const uint16_t* w, int64_t in, const float* bias, int64_t first,
                int64_t count, float* const* y) {
  if (!has_avx2_f16c()) {
    for (int64_t o = first; o < first + count; ++o) dot_rows_scalar(x, rows, w + o * in, in, bias, o, y);
    return;
  }
  if (rows == 2)
    dot_rows_avx2<2>(x, w, in, bias, first, count, y);
  else
    dot_rows_avx2<1>(x, w, in, bias, first, count, y);
}

at::Tensor rows_times_half(const at::Tensor& rows, const at::Tensor& weights, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(rows.dim() == 2 && rows.scalar_type() == at::kFloat, "rows_times_half: rows must be (N, in) float32");
  TORCH_CHECK(weights.dim() == 2 && weights.scalar_type() == at::kHalf && weights.size(1) == rows.size(1),
              "rows_times_half: weights must be (out, in) float16 with in = ", rows.size(1));
  TORCH_CHECK(rows.device().is_cpu() && weights.device().is_cpu(), "rows_times_half: CPU tensors only");
  const int64_t n = rows.size(0), in = rows.size(1), out = weights.size(0);
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out && bias->scalar_type() == at::kFloat,
                "rows_times_half: bias must be (out,) float32");
    b = bias->contiguous();
  }
  if (n > kMaxKernelRows) {
    const at::Tensor w32 = weights.to(at::kFloat);
    return b.has_value() ? at::addmm(*b, rows, w32.t()) : at::mm(rows, w32.t());
  }
  const at::Tensor x = rows.contiguous();
  const at::Tensor w = weights.contiguous();
  at::Tensor y = at::empty({n, out}, rows.options());
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::Half>());
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
        rows_block(xs, take, wp, in, bp, first, std::min(kOutputsPerBlock, out - first), ys);
      }
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY(audiokit, m) {
  m.def("rows_times_half(Tensor rows, Tensor weights, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(audiokit, CPU, m) { m.impl("rows_times_half", &rows_times_half); }
