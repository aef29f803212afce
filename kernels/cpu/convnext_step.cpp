// A ConvNeXt block's streaming step as one call (audiokit.ops.convnext_block_step, backend "cpp"):
// causal depthwise conv with its state updated in place, LayerNorm, Linear, GELU, Linear, residual.
//
// Time-major rows (B, n, C). The conv and the LayerNorm are plain loops the compiler vectorises
// over channels (OpenMP over streams); the two products are BLAS calls (at::addmm) made the way
// audiokit.nn.streaming.matmul_rows makes them (inputs summed in pieces of at most 768), with fewer
// than four rows computed as four (matmul_rows pads only a single row, to two; an AMD EPYC's BLAS also
// rounds 2-3 rows differently), so every row is rounded the same whatever the number of rows: a
// stream's steps and the offline forward over the whole signal give bit-identical rows.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kPieceInputs = 768;  // audiokit.nn.streaming.PIECE_INPUTS
constexpr int64_t kMinRows = 4;  // audiokit.nn.streaming.MIN_ROWS (see normed below)
constexpr int64_t kLanes = 16;         // partial sums of a row's reductions

// sum of v[0 .. n) in kLanes fixed partial sums: vectorisable, yet rounded the same wherever v lies in
// memory (a compiler-made reduction peels a number of leading elements that depends on the alignment)
inline float lane_sum(const float* v, int64_t n) {
  float lanes[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += v[c + j];
  for (int64_t j = 0; c + j < n; ++j) lanes[j] += v[c + j];
  float sum = 0.0f;
  for (int64_t j = 0; j < kLanes; ++j) sum += lanes[j];
  return sum;
}

// rows (N, in) @ matrix (in, out) + bias, as matmul_rows does it for N >= 2
torch::Tensor matmul_rows(const torch::Tensor& rows, const torch::Tensor& matrix,
                          const std::optional<torch::Tensor>& bias) {
  const int64_t inputs = rows.size(1);
  torch::Tensor y;
  for (int64_t start = 0; start < inputs; start += kPieceInputs) {
    const int64_t len = std::min(kPieceInputs, inputs - start);
    const auto part = inputs <= kPieceInputs ? rows : rows.narrow(1, start, len);
    const auto weights = inputs <= kPieceInputs ? matrix : matrix.narrow(0, start, len);
    if (!y.defined()) {
      y = bias ? at::addmm(*bias, part, weights) : at::mm(part, weights);
    } else {
      y.addmm_(part, weights);
    }
  }
  return y;
}

// GELU (erf form) in place: erf as a rational function on [-4, 4] (Eigen's float erf; error < 5e-7
// measured), clamped outside. Vectorised, and the same arithmetic in the vector body and any scalar
// remainder, so a row's values do not depend on where a thread's share of the rows ends (at::gelu_
// rounds its vectorised body and its scalar remainder differently)
void gelu_erf_(float* v, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float x = std::min(std::max(v[i] * 0.70710678118654752f, -4.0f), 4.0f), x2 = x * x;
    float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
    p = x2 * p - 2.10102402082508e-06f;
    p = x2 * p - 5.69250639462346e-05f;
    p = x2 * p - 7.34990630326855e-04f;
    p = x2 * p - 2.95459980854025e-03f;
    p = x2 * p - 1.60960333262415e-02f;
    float q = x2 * -1.45660718464996e-05f - 2.13374055278905e-04f;
    q = x2 * q - 1.68282697438203e-03f;
    q = x2 * q - 7.37332916720468e-03f;
    q = x2 * q - 1.42647390514189e-02f;
    v[i] = v[i] * 0.5f * (1.0f + x * p / q);
  }
}

void check(bool ok, const char* what) { TORCH_CHECK(ok, "convnext_block_step: ", what); }

}  // namespace

torch::Tensor convnext_block_step(const torch::Tensor& x, torch::Tensor state, const torch::Tensor& taps,
                                  const std::optional<torch::Tensor>& conv_bias,
                                  const torch::Tensor& norm_weight, const torch::Tensor& norm_bias,
                                  double eps, const torch::Tensor& w1,
                                  const std::optional<torch::Tensor>& b1, const torch::Tensor& w2,
                                  const std::optional<torch::Tensor>& b2, const std::string& approximate) {
  check(x.dim() == 3 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
        "x must be a float32 CPU tensor (B, n, C)");
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), kernel = taps.size(1);
  const int64_t history = kernel - 1, hidden = w1.size(1);
  check(state.dim() == 3 && state.size(0) == batch && state.size(1) == history && state.size(2) == channels,
        "state must be (B, K - 1, C)");
  check(state.scalar_type() == torch::kFloat32, "state must be float32");
  check(taps.size(0) == channels && w1.size(0) == channels && w2.size(0) == hidden && w2.size(1) == channels,
        "weights must be taps (C, K), w1 (C, H), w2 (H, C)");
  const int64_t rows = batch * length;
  if (rows == 0) return torch::empty({batch, length, channels}, x.options());

  const auto xc = x.contiguous();
  const auto taps_t = taps.t().contiguous();  // (K, C): tap k of every channel side by side
  const auto nw = norm_weight.contiguous(), nb = norm_bias.contiguous();
  const auto cb = conv_bias ? conv_bias->contiguous() : torch::zeros({channels}, x.options());
  // LayerNorm output; fewer than kMinRows rows are computed as kMinRows (BLAS multiplies so few rows
  // by other routes: one row as a matrix-vector product, and on some CPUs 2-3 rows too)
  auto normed = torch::empty({std::max<int64_t>(rows, kMinRows), channels}, x.options());

  const float* xp = xc.data_ptr<float>();
  const float* tp = taps_t.data_ptr<float>();
  const float* nwp = nw.data_ptr<float>();
  const float* nbp = nb.data_ptr<float>();
  const float* cbp = cb.data_ptr<float>();
  float* hp = normed.data_ptr<float>();
  float* sp = state.data_ptr<float>();
  const int64_t ssb = state.stride(0), sst = state.stride(1), ssc = state.stride(2);
  const float feps = static_cast<float>(eps), inv_c = 1.0f / static_cast<float>(channels);

  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> old(history * channels), acc(channels), sq(channels);
    for (int64_t b = begin; b < end; ++b) {
      float* s = sp + b * ssb;
      for (int64_t i = 0; i < history; ++i)
        for (int64_t c = 0; c < channels; ++c) old[i * channels + c] = s[i * sst + c * ssc];
      const float* xb = xp + b * length * channels;
      auto z = [&](int64_t row) {  // row of [state | x]
        return row < history ? old.data() + row * channels : xb + (row - history) * channels;
      };
      for (int64_t t = 0; t < length; ++t) {
        float* a = acc.data();
        const float* z0 = z(t);
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) a[c] = tp[c] * z0[c];
        for (int64_t k = 1; k < kernel; ++k) {
          const float* zk = z(t + k);
          const float* tk = tp + k * channels;
#pragma omp simd
          for (int64_t c = 0; c < channels; ++c) a[c] += tk[c] * zk[c];
        }
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) a[c] += cbp[c];
        const float mean = lane_sum(a, channels) * inv_c;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) {
          a[c] -= mean;
          sq[c] = a[c] * a[c];
        }
        const float scale = 1.0f / std::sqrt(lane_sum(sq.data(), channels) * inv_c + feps);
        float* h = hp + (b * length + t) * channels;
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) h[c] = a[c] * scale * nwp[c] + nbp[c];
      }
      for (int64_t i = 0; i < history; ++i) {  // new state: the last K - 1 rows of [state | x]
        const float* src = z(length + i);
        for (int64_t c = 0; c < channels; ++c) s[i * sst + c * ssc] = src[c];
      }
    }
  });
  for (int64_t r = rows; r < kMinRows; ++r) normed[r].copy_(normed[0]);

  auto inner = matmul_rows(normed, w1, b1);
  if (approximate == "none") {
    float* ip = inner.data_ptr<float>();
    at::parallel_for(0, inner.size(0), 16, [&](int64_t begin, int64_t end) {
      gelu_erf_(ip + begin * hidden, (end - begin) * hidden);
    });
  } else {
    at::gelu_(inner, approximate);
  }
  auto out = matmul_rows(inner, w2, b2);
  if (rows < kMinRows) out = out.narrow(0, 0, rows);
  out.add_(xc.view({rows, channels}));
  return out.view({batch, length, channels});
}
