// The torch side of the CUDA ConvNeXt block step (audiokit.ops.convnext_block_step, backend "cuda"):
// checks, the kernels of convnext_step.cu, and the two products through cuBLAS (at::mm), all on the
// stream the caller passes (audiokit/ops/cuda.py: torch's current stream, its device made current),
// so that a step can be captured in a CUDA graph. No CUDA header: it compiles against a CPU build of
// torch as well (the tests check it does).
#include <torch/extension.h>

#include <optional>
#include <string>

#include "convnext_step.h"

namespace {

void check(bool ok, const char* what) { TORCH_CHECK(ok, "convnext_block_step (cuda): ", what); }

void check_launch(const char* error) {
  TORCH_CHECK(error == nullptr, "convnext_block_step (cuda): kernel launch failed: ", error);
}

const float* optional_ptr(const std::optional<torch::Tensor>& t) { return t ? t->data_ptr<float>() : nullptr; }

}  // namespace

torch::Tensor convnext_block_step(const torch::Tensor& x, torch::Tensor state, const torch::Tensor& taps,
                                  const std::optional<torch::Tensor>& conv_bias,
                                  const torch::Tensor& norm_weight, const torch::Tensor& norm_bias,
                                  double eps, const torch::Tensor& w1,
                                  const std::optional<torch::Tensor>& b1, const torch::Tensor& w2,
                                  const std::optional<torch::Tensor>& b2, const std::string& approximate,
                                  int64_t stream) {
  check(x.dim() == 3 && x.scalar_type() == torch::kFloat32 && x.is_cuda(),
        "x must be a float32 CUDA tensor (B, n, C)");
  check(taps.dim() == 2 && taps.size(1) >= 1, "taps must be (C, K), K >= 1");
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), kernel = taps.size(1);
  const int64_t hidden = w1.size(1);
  check(state.dim() == 3 && state.size(0) == batch && state.size(1) == kernel - 1 && state.size(2) == channels,
        "state must be (B, K - 1, C)");
  check(state.scalar_type() == torch::kFloat32 && state.device() == x.device(),
        "state must be float32 on x's device");
  check(taps.size(0) == channels && w1.size(0) == channels && w2.size(0) == hidden && w2.size(1) == channels,
        "weights must be taps (C, K), w1 (C, H), w2 (H, C)");
  check(approximate == "none" || approximate == "tanh", "approximate must be 'none' or 'tanh'");
  const int64_t rows = batch * length;
  if (rows == 0) return torch::empty({batch, length, channels}, x.options());

  const auto prepared = [&](const torch::Tensor& t) {
    check(t.scalar_type() == torch::kFloat32 && t.device() == x.device(), "weights must be float32 on x's device");
    return t.contiguous();
  };
  const auto prepared_optional = [&](const std::optional<torch::Tensor>& t) -> std::optional<torch::Tensor> {
    return t ? std::optional<torch::Tensor>(prepared(*t)) : std::nullopt;
  };
  const auto xc = x.contiguous(), taps_c = prepared(taps), nw = prepared(norm_weight), nb = prepared(norm_bias);
  const auto weight1 = prepared(w1), weight2 = prepared(w2);
  const auto cb = prepared_optional(conv_bias), bias1 = prepared_optional(b1), bias2 = prepared_optional(b2);
  void* handle = reinterpret_cast<void*>(stream);

  auto normed = torch::empty({rows, channels}, x.options());
  const int64_t state_strides[3] = {state.stride(0), state.stride(1), state.stride(2)};
  check_launch(audiokit_cuda::dwconv_layernorm_update(
      xc.data_ptr<float>(), state.data_ptr<float>(), taps_c.data_ptr<float>(), optional_ptr(cb),
      nw.data_ptr<float>(), nb.data_ptr<float>(), normed.data_ptr<float>(), batch, length, channels, kernel,
      static_cast<float>(eps), state_strides, handle));
  auto inner = at::mm(normed, weight1);
  check_launch(audiokit_cuda::bias_gelu(inner.data_ptr<float>(), optional_ptr(bias1), rows, hidden,
                                        approximate == "tanh", handle));
  auto out = at::mm(inner, weight2);
  check_launch(audiokit_cuda::bias_residual(out.data_ptr<float>(), optional_ptr(bias2), xc.data_ptr<float>(),
                                            rows, channels, handle));
  return out.view({batch, length, channels});
}
