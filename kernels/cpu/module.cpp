// The Python module of the CPU kernels (audiokit.ops.cpp): one binding per kernel source.
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>

torch::Tensor convnext_block_step(const torch::Tensor& x, torch::Tensor state, const torch::Tensor& taps,
                                  const std::optional<torch::Tensor>& conv_bias,
                                  const torch::Tensor& norm_weight, const torch::Tensor& norm_bias,
                                  double eps, const torch::Tensor& w1,
                                  const std::optional<torch::Tensor>& b1, const torch::Tensor& w2,
                                  const std::optional<torch::Tensor>& b2, const std::string& approximate);

std::tuple<torch::Tensor, torch::Tensor> rvq_encode(const torch::Tensor& rows, const torch::Tensor& proj_w,
                                                    const torch::Tensor& proj_b, const torch::Tensor& codebooks,
                                                    const torch::Tensor& offsets, const torch::Tensor& tables);

std::tuple<torch::Tensor, int64_t, int64_t> prior_decode(
    const torch::Tensor& payload, int64_t frames, int64_t channels, int64_t n_q, const torch::Tensor& prev,
    const torch::Tensor& cur, const torch::Tensor& stage, const torch::Tensor& w1, const torch::Tensor& b1,
    const torch::Tensor& w2, const torch::Tensor& b2, const torch::Tensor& out, const torch::Tensor& out_real,
    const torch::Tensor& row_bound, const torch::Tensor& w1_real, const torch::Tensor& w2_real,
    const torch::Tensor& layer_bound, const torch::Tensor& bias, const torch::Tensor& table, int64_t precision,
    int64_t w1_exp, int64_t w2_exp, int64_t logit_shift);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("convnext_block_step", &convnext_block_step,
        "ConvNeXt block streaming step: depthwise conv (state updated in place) + LayerNorm + MLP + residual");
  m.def("rvq_encode", &rvq_encode,
        "Residual vector quantisation of latent rows: per stage projection, nearest codeword, residual update");
  m.def("prior_decode", &prior_decode,
        "Decode an entropy-coded chunk with the integer causal prior: codes, error kind, byte position");
}
