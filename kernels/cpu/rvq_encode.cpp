// Residual vector quantisation of latent rows in one call (audiokit.ops.rvq_encode, backend "cpp"):
// per stage a projection to the codebook's space, a Euclidean nearest-codeword search and the residual
// update, all stages of a row in a row of work (OpenMP over rows through at::parallel_for).
//
// The arithmetic is audiokit.ops.reference.rvq_encode's: projections and scores in float64 (the scores
// of a trained codebook need them: audiokit/quantize/lookup.py), the residual and the quantized sum in
// float32, subtracted and added in stage order, so the quantized rows equal the reference's bit for bit
// and the codes agree wherever two codewords' scores differ by more than float64 rounding (~1e-13).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <limits>
#include <tuple>
#include <vector>

namespace {

void check(bool ok, const char* what) { TORCH_CHECK(ok, "rvq_encode: ", what); }

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> rvq_encode(const torch::Tensor& rows, const torch::Tensor& proj_w,
                                                    const torch::Tensor& proj_b, const torch::Tensor& codebooks,
                                                    const torch::Tensor& offsets, const torch::Tensor& tables) {
  check(rows.dim() == 2 && rows.scalar_type() == torch::kFloat32 && rows.device().is_cpu(),
        "rows must be float32 (N, D) on the CPU");
  const int64_t n = rows.size(0), dim = rows.size(1);
  check(proj_w.dim() == 3 && proj_w.size(1) == dim && proj_w.scalar_type() == torch::kFloat64,
        "proj_w must be float64 (S, D, d)");
  const int64_t stages = proj_w.size(0), d = proj_w.size(2);
  check(codebooks.dim() == 3 && codebooks.size(0) == stages && codebooks.size(2) == d &&
            codebooks.scalar_type() == torch::kFloat64,
        "codebooks must be float64 (S, K, d)");
  const int64_t k = codebooks.size(1);
  check(proj_b.sizes() == torch::IntArrayRef({stages, d}) && proj_b.scalar_type() == torch::kFloat64,
        "proj_b must be float64 (S, d)");
  check(offsets.sizes() == torch::IntArrayRef({stages, k}) && offsets.scalar_type() == torch::kFloat64,
        "offsets must be float64 (S, K)");
  check(tables.sizes() == torch::IntArrayRef({stages, k, dim}) && tables.scalar_type() == torch::kFloat32,
        "tables must be float32 (S, K, D)");
  const auto x = rows.contiguous();
  const auto w = proj_w.contiguous(), b = proj_b.contiguous(), c = codebooks.contiguous();
  const auto o = offsets.contiguous(), t = tables.contiguous();
  auto codes = torch::empty({stages, n}, rows.options().dtype(torch::kInt64));
  auto quantized = torch::zeros({n, dim}, rows.options());
  const float* xp = x.data_ptr<float>();
  const double *wp = w.data_ptr<double>(), *bp = b.data_ptr<double>(), *cp = c.data_ptr<double>();
  const double* op = o.data_ptr<double>();
  const float* tp = t.data_ptr<float>();
  int64_t* codes_p = codes.data_ptr<int64_t>();
  float* qp = quantized.data_ptr<float>();
  at::parallel_for(0, n, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> residual(dim);
    std::vector<double> z(d);
    for (int64_t row = begin; row < end; ++row) {
      std::copy(xp + row * dim, xp + (row + 1) * dim, residual.begin());
      float* q = qp + row * dim;
      for (int64_t s = 0; s < stages; ++s) {
        const double* ws = wp + s * dim * d;
        for (int64_t j = 0; j < d; ++j) z[j] = 0.0;
        for (int64_t i = 0; i < dim; ++i) {
          const double r = residual[i];
          const double* wi = ws + i * d;
          for (int64_t j = 0; j < d; ++j) z[j] += r * wi[j];
        }
        for (int64_t j = 0; j < d; ++j) z[j] += bp[s * d + j];
        const double* cs = cp + s * k * d;
        const double* os = op + s * k;
        int64_t best = 0;
        double best_score = std::numeric_limits<double>::infinity();
        for (int64_t code = 0; code < k; ++code) {
          const double* word = cs + code * d;
          double dot = 0.0;
          for (int64_t j = 0; j < d; ++j) dot += z[j] * word[j];
          const double score = os[code] - 2.0 * dot;
          if (score < best_score) {  // strictly: the first index on exact ties
            best_score = score;
            best = code;
          }
        }
        codes_p[s * n + row] = best;
        const float* stage = tp + (s * k + best) * dim;
        for (int64_t i = 0; i < dim; ++i) {
          residual[i] -= stage[i];
          q[i] += stage[i];
        }
      }
    }
  });
  return {codes, quantized};
}
