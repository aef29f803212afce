// The Python module of the CUDA kernels (audiokit.ops.cuda): one binding per kernel's glue. Each takes
// the stream last (torch.cuda.current_stream().cuda_stream, its device made current by the caller).
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>

torch::Tensor convnext_block_step(const torch::Tensor& x, torch::Tensor state, const torch::Tensor& taps,
                                  const std::optional<torch::Tensor>& conv_bias,
                                  const torch::Tensor& norm_weight, const torch::Tensor& norm_bias,
                                  double eps, const torch::Tensor& w1,
                                  const std::optional<torch::Tensor>& b1, const torch::Tensor& w2,
                                  const std::optional<torch::Tensor>& b2, const std::string& approximate,
                                  int64_t stream);

std::tuple<torch::Tensor, torch::Tensor> rvq_encode(const torch::Tensor& rows, const torch::Tensor& proj_w,
                                                    const torch::Tensor& proj_b, const torch::Tensor& codebooks,
                                                    const torch::Tensor& offsets, const torch::Tensor& tables,
                                                    int64_t stream);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("convnext_block_step", &convnext_block_step,
        "ConvNeXt block streaming step on CUDA: depthwise conv (state updated in place) + LayerNorm + MLP + "
        "residual");
  m.def("rvq_encode", &rvq_encode,
        "Residual vector quantisation of latent rows on CUDA: per stage projection, nearest codeword, residual "
        "update");
}
