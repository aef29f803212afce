// Decoding one entropy-coded .akc chunk with the learned causal prior (audiokit.entropy_model, the
// `cpp` backend of PriorModel.decode): the integer network and the range decoder, code by code.
//
// Every step is the integer arithmetic of PriorModel._history / _logits / frequencies_from_logits and of
// audiokit.entropy.RangeDecoder (int64 sums and products, arithmetic right shifts rounded half up, a
// table lookup, floor divisions; dot products and quotients go through doubles only where every value
// is an integer below 2**52, which doubles hold exactly), so the codes are those of the numpy decoder on
// every machine; only the speed differs (the numpy one pays ~15 array calls a code).
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

// GCC/Clang function multi-versioning (ifunc) exists on x86-64 Linux only
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define AVX2_CLONES
#endif

constexpr uint64_t kTop = uint64_t{1} << 24;
constexpr uint64_t kMask = 0xFFFFFFFFull;
constexpr double kExactDouble = 4503599627370496.0;  // 2**52: integers below it and their sums are exact

void check(bool ok, const char* what) { TORCH_CHECK(ok, "prior_decode: ", what); }

// value * 2**-shift rounded half up (an arithmetic shift), or an exact left shift for shift <= 0
inline int64_t rshift(int64_t value, int64_t shift) {
  return shift > 0 ? (value + (int64_t{1} << (shift - 1))) >> shift : value * (int64_t{1} << -shift);
}

const int64_t* ints(const torch::Tensor& t, int64_t dims, const char* what) {
  check(t.scalar_type() == torch::kInt64 && t.dim() == dims && t.is_contiguous() && t.device().is_cpu(), what);
  return t.data_ptr<int64_t>();
}

// logits[k] = rows[k] . y + bias[k] for every code k, the dot products in doubles (exact: the caller
// checked that every partial sum is an integer below 2**52); returns the largest. Compiled for AVX2 and
// for the baseline, chosen at load time.
AVX2_CLONES int64_t exact_logits(const double* y, const double* rows, const int64_t* bias, int64_t size,
                                 int64_t width, int64_t* logits) {
  int64_t peak = INT64_MIN;
  for (int64_t k = 0; k < size; ++k) {
    const double* row = rows + k * width;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < width; ++j) s += y[j] * row[j];
    logits[k] = static_cast<int64_t>(s) + bias[k];
    peak = std::max(peak, logits[k]);
  }
  return peak;
}

// out[c] = sum_r in[r] * weights[r, c] in doubles, row by row of the weights (exact under the same
// condition as exact_logits).
AVX2_CLONES void exact_matvec(const double* in, const double* weights, int64_t rows, int64_t cols, double* out) {
  std::fill(out, out + cols, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const double v = in[r];
    const double* row = weights + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) out[c] += v * row[c];
  }
}

// out = bias + in weights (weights [rows, cols], accumulated row by row: contiguous, vectorised) in
// doubles when |in| times `bound` (the largest sum of |weights| over a column) keeps every partial sum an
// integer below 2**52, which is exact; else in int64 (exact in any order). in_real, acc_real: scratch.
void layer(const int64_t* in, const int64_t* weights, const double* weights_real, double bound,
           const int64_t* bias, int64_t rows, int64_t cols, double* in_real, double* acc_real, int64_t* out) {
  int64_t peak = 0;
  for (int64_t r = 0; r < rows; ++r) peak = std::max(peak, in[r] < 0 ? -in[r] : in[r]);
  if (static_cast<double>(peak) * bound < kExactDouble) {
    for (int64_t r = 0; r < rows; ++r) in_real[r] = static_cast<double>(in[r]);
    exact_matvec(in_real, weights_real, rows, cols, acc_real);
    for (int64_t c = 0; c < cols; ++c) out[c] = bias[c] + static_cast<int64_t>(acc_real[c]);
    return;
  }
  std::copy_n(bias, cols, out);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t v = in[r];
    const int64_t* row = weights + r * cols;
    for (int64_t c = 0; c < cols; ++c) out[c] += v * row[c];
  }
}

}  // namespace

// Codes [frames, channels, n_q] of a payload, and (error, position): error 0 when it decoded, 1 when a
// value fell outside the code range (position: the payload byte read last), 2 when bytes are left after
// the last code (position: the first of them). prev [lags, stages, size + 1, width] and cur [stages, size,
// width] are already at the activation exponent; out [stages, size, width], out_real the same as float64
// and row_bound [stages] the largest sum of |out| over a code's row (with the largest activation, a bound
// on every partial sum of a logit: below 2**52 the logits are summed exactly in doubles); w1_real and
// w2_real are w1 and w2 as float64 and layer_bound [stages, 2] the largest sum of |w1| over an output
// column and of |w2| over an output column, the same bounds for the two layers.
std::tuple<torch::Tensor, int64_t, int64_t> prior_decode(
    const torch::Tensor& payload, int64_t frames, int64_t channels, int64_t n_q, const torch::Tensor& prev,
    const torch::Tensor& cur, const torch::Tensor& stage, const torch::Tensor& w1, const torch::Tensor& b1,
    const torch::Tensor& w2, const torch::Tensor& b2, const torch::Tensor& out, const torch::Tensor& out_real,
    const torch::Tensor& row_bound, const torch::Tensor& w1_real, const torch::Tensor& w2_real,
    const torch::Tensor& layer_bound, const torch::Tensor& bias, const torch::Tensor& table, int64_t precision,
    int64_t w1_exp, int64_t w2_exp, int64_t logit_shift) {
  check(payload.scalar_type() == torch::kUInt8 && payload.dim() == 1 && payload.is_contiguous(),
        "payload must be a contiguous uint8 vector");
  const int64_t lags = prev.size(0), stages = prev.size(1), size = cur.size(1), width = cur.size(2);
  const int64_t hidden = w1.size(2);
  const int64_t* p_prev = ints(prev, 4, "prev must be int64 [lags, stages, size + 1, width]");
  const int64_t* p_cur = ints(cur, 3, "cur must be int64 [stages, size, width]");
  const int64_t* p_stage = ints(stage, 2, "stage must be int64 [stages, width]");
  const int64_t* p_w1 = ints(w1, 3, "w1 must be int64 [stages, width, hidden]");
  const int64_t* p_b1 = ints(b1, 2, "b1 must be int64 [stages, hidden]");
  const int64_t* p_w2 = ints(w2, 3, "w2 must be int64 [stages, hidden, width]");
  const int64_t* p_b2 = ints(b2, 2, "b2 must be int64 [stages, width]");
  const int64_t* p_out = ints(out, 3, "out must be int64 [stages, size, width]");
  const int64_t* p_bias = ints(bias, 2, "bias must be int64 [stages, size]");
  check(out_real.scalar_type() == torch::kFloat64 && out_real.sizes() == out.sizes() && out_real.is_contiguous(),
        "out_real must be out as contiguous float64");
  check(row_bound.scalar_type() == torch::kFloat64 && row_bound.dim() == 1 && row_bound.size(0) == stages,
        "row_bound must be float64 [stages]");
  const double* p_out_real = out_real.data_ptr<double>();
  const double* p_row_bound = row_bound.data_ptr<double>();
  check(w1_real.scalar_type() == torch::kFloat64 && w1_real.sizes() == w1.sizes() && w1_real.is_contiguous() &&
            w2_real.scalar_type() == torch::kFloat64 && w2_real.sizes() == w2.sizes() && w2_real.is_contiguous(),
        "w1_real and w2_real must be w1 and w2 as contiguous float64");
  check(layer_bound.scalar_type() == torch::kFloat64 && layer_bound.numel() == 2 * w1.size(0) &&
            layer_bound.is_contiguous(),
        "layer_bound must be float64 [stages, 2]");
  const double* p_w1_real = w1_real.data_ptr<double>();
  const double* p_w2_real = w2_real.data_ptr<double>();
  const double* p_layer_bound = layer_bound.data_ptr<double>();
  const int64_t* p_table = ints(table, 1, "table must be int64 [n]");
  check(prev.size(2) == size + 1 && prev.size(3) == width && cur.size(0) == stages, "table sizes differ");
  check(w1.size(0) == stages && w1.size(1) == width && w2.size(1) == hidden && w2.size(2) == width,
        "layer sizes differ");
  check(out.size(0) == stages && out.size(1) == size && out.size(2) == width, "out sizes differ");
  check(1 <= n_q && n_q <= stages && frames >= 0 && channels >= 1, "bad frames, channels or n_q");
  check(precision >= 8 && precision <= 16 && size <= (int64_t{1} << precision) / 2, "bad precision");
  const int64_t table_last = table.size(0) - 1;

  // the range decoder's input: the payload, then zeros (at most two bytes a code, plus the code value)
  const int64_t count = frames * channels * n_q;
  const int64_t payload_size = payload.size(0);
  std::vector<uint8_t> data(payload_size + 4 + 2 * count, 0);
  std::copy_n(payload.data_ptr<uint8_t>(), payload_size, data.begin());
  uint64_t code = (uint64_t{data[0]} << 24) | (uint64_t{data[1]} << 16) | (uint64_t{data[2]} << 8) | data[3];
  uint64_t range = kMask;
  int64_t pos = 4;

  torch::Tensor codes = torch::zeros({frames, channels, n_q}, torch::kInt64);
  int64_t* p_codes = codes.data_ptr<int64_t>();
  std::vector<int64_t> history(n_q * width), x(width), h(hidden), y(width), logits(size), ends(size);
  const int64_t total = int64_t{1} << precision, spare = total - size;
  std::vector<double> y_real(width), in_real(std::max(width, hidden)), acc_real(std::max(width, hidden));
  for (int64_t t = 0; t < frames; ++t) {
    for (int64_t c = 0; c < channels; ++c) {
      // history: for stage q, the embeddings of stages 0..q of the `lags` frames before (start code
      // `size` before frame 0), summed
      std::fill(history.begin(), history.end(), 0);
      for (int64_t lag = 1; lag <= lags; ++lag) {
        std::vector<int64_t> running(width, 0);
        for (int64_t q = 0; q < n_q; ++q) {
          const int64_t before = t - lag >= 0 ? p_codes[((t - lag) * channels + c) * n_q + q] : size;
          const int64_t* e = p_prev + (((lag - 1) * stages + q) * (size + 1) + before) * width;
          for (int64_t j = 0; j < width; ++j) {
            running[j] += e[j];
            history[q * width + j] += running[j];
          }
        }
      }
      std::vector<int64_t> current(width, 0);
      for (int64_t q = 0; q < n_q; ++q) {
        for (int64_t j = 0; j < width; ++j) x[j] = history[q * width + j] + current[j] + p_stage[q * width + j];
        layer(x.data(), p_w1 + q * width * hidden, p_w1_real + q * width * hidden, p_layer_bound[2 * q],
              p_b1 + q * hidden, width, hidden, in_real.data(), acc_real.data(), h.data());
        for (int64_t m = 0; m < hidden; ++m) h[m] = std::max<int64_t>(rshift(h[m], w1_exp), 0);
        layer(h.data(), p_w2 + q * hidden * width, p_w2_real + q * hidden * width, p_layer_bound[2 * q + 1],
              p_b2 + q * width, hidden, width, in_real.data(), acc_real.data(), y.data());
        for (int64_t j = 0; j < width; ++j) y[j] = std::max<int64_t>(x[j] + rshift(y[j], w2_exp), 0);
        // logits = y out[q]^T + bias[q]: in doubles where every partial sum is an integer below 2**53
        // (exact, and vectorised), else in int64
        int64_t y_peak = 0;
        for (int64_t j = 0; j < width; ++j) y_peak = std::max(y_peak, y[j]);
        int64_t peak = INT64_MIN;
        if (static_cast<double>(y_peak) * p_row_bound[q] < kExactDouble) {
          for (int64_t j = 0; j < width; ++j) y_real[j] = static_cast<double>(y[j]);
          peak = exact_logits(y_real.data(), p_out_real + q * size * width, p_bias + q * size, size, width,
                              logits.data());
        } else {
          const int64_t* outq = p_out + q * size * width;
          for (int64_t k = 0; k < size; ++k) {
            int64_t s = p_bias[q * size + k];
            const int64_t* row = outq + k * width;
            for (int64_t j = 0; j < width; ++j) s += y[j] * row[j];
            logits[k] = s;
            peak = std::max(peak, s);
          }
        }
        // frequencies: 1 each, the rest in proportion to exp_table weights, the remainder to the first
        // code of the largest weight; kept as cumulative ends
        int64_t weight_sum = 0, best = 0, best_weight = -1;
        for (int64_t k = 0; k < size; ++k) {
          const int64_t w = p_table[std::min(rshift(peak - logits[k], logit_shift), table_last)];
          logits[k] = w;  // reuse as the weights
          weight_sum += w;
          if (w > best_weight) best_weight = w, best = k;
        }
        // floor(w * spare / weight_sum) through a double quotient, corrected to the exact floor (the
        // operands are below 2**53, so the estimate is off by at most one)
        const double divisor = static_cast<double>(weight_sum);
        int64_t sum = 0;
        for (int64_t k = 0; k < size; ++k) {
          const int64_t numerator = logits[k] * spare;
          int64_t quotient = static_cast<int64_t>(static_cast<double>(numerator) / divisor);
          quotient -= quotient * weight_sum > numerator;
          quotient += (quotient + 1) * weight_sum <= numerator;
          logits[k] = 1 + quotient;
          sum += logits[k];
        }
        logits[best] += total - sum;
        int64_t running_end = 0;
        for (int64_t k = 0; k < size; ++k) ends[k] = running_end += logits[k];

        const uint64_t r = range >> precision;
        const uint64_t value = code / r;
        if (value >= static_cast<uint64_t>(total)) return {codes, 1, pos - 1};
        const int64_t symbol =
            std::upper_bound(ends.begin(), ends.end(), static_cast<int64_t>(value)) - ends.begin();
        const uint64_t start = symbol ? ends[symbol - 1] : 0;
        code -= r * start;
        range = r * (ends[symbol] - start);
        while (range < kTop) {
          code = ((code << 8) | data[pos]) & kMask;
          ++pos;
          range <<= 8;
        }
        p_codes[(t * channels + c) * n_q + q] = symbol;
        const int64_t* e = p_cur + (q * size + symbol) * width;
        for (int64_t j = 0; j < width; ++j) current[j] += e[j];
      }
    }
  }
  if (pos < payload_size) return {codes, 2, pos};
  return {codes, 0, 0};
}
