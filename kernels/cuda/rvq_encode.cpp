// The torch side of the CUDA RVQ search (audiokit.ops.rvq_encode, backend "cuda"): checks, then the
// kernel of rvq_encode.cu on the stream the caller passes. No CUDA header (compiles against a CPU torch).
#include <torch/extension.h>

#include <tuple>

#include "rvq_encode.h"

namespace {

void check(bool ok, const char* what) { TORCH_CHECK(ok, "rvq_encode (cuda): ", what); }

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> rvq_encode(const torch::Tensor& rows, const torch::Tensor& proj_w,
                                                    const torch::Tensor& proj_b, const torch::Tensor& codebooks,
                                                    const torch::Tensor& offsets, const torch::Tensor& tables,
                                                    int64_t stream) {
  check(rows.dim() == 2 && rows.scalar_type() == torch::kFloat32 && rows.is_cuda(),
        "rows must be a float32 CUDA tensor (N, D)");
  const int64_t n = rows.size(0), dim = rows.size(1);
  check(proj_w.dim() == 3 && proj_w.size(1) == dim, "proj_w must be (S, D, d)");
  const int64_t stages = proj_w.size(0), d = proj_w.size(2);
  check(codebooks.dim() == 3 && codebooks.size(0) == stages && codebooks.size(2) == d, "codebooks must be (S, K, d)");
  const int64_t k = codebooks.size(1);
  check(proj_b.sizes() == torch::IntArrayRef({stages, d}), "proj_b must be (S, d)");
  check(offsets.sizes() == torch::IntArrayRef({stages, k}), "offsets must be (S, K)");
  check(tables.sizes() == torch::IntArrayRef({stages, k, dim}), "tables must be (S, K, D)");
  for (const auto* t : {&proj_w, &proj_b, &codebooks, &offsets}) {
    check(t->scalar_type() == torch::kFloat64 && t->device() == rows.device(), "tables of scores must be float64 on rows' device");
  }
  check(tables.scalar_type() == torch::kFloat32 && tables.device() == rows.device(), "tables must be float32 on rows' device");
  const auto x = rows.contiguous(), w = proj_w.contiguous(), b = proj_b.contiguous();
  const auto c = codebooks.contiguous(), o = offsets.contiguous(), t = tables.contiguous();
  auto codes = torch::empty({stages, n}, rows.options().dtype(torch::kInt64));
  auto quantized = torch::empty({n, dim}, rows.options());
  const char* error = audiokit_cuda::rvq_encode(
      x.data_ptr<float>(), w.data_ptr<double>(), b.data_ptr<double>(), c.data_ptr<double>(), o.data_ptr<double>(),
      t.data_ptr<float>(), codes.data_ptr<int64_t>(), quantized.data_ptr<float>(), n, dim, d, k, stages,
      reinterpret_cast<void*>(stream));
  TORCH_CHECK(error == nullptr, "rvq_encode (cuda): kernel launch failed: ", error);
  return {codes, quantized};
}
