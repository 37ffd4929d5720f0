// The native ops of the fused generator head: tnops::mlm_head_native(_backward) and tnops::mlm_shard_stats_native
// (their schemas in ops.cpp), each checking its arguments (mlm_checks.h) and running a HeadCall (mlm_head_call.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "mlm_checks.h"
#include "mlm_head_call.h"

namespace tnops {

using at::Tensor;
using Grads = std::tuple<Tensor, Tensor, Tensor>;

// mlm_head_native: per-row nll, lse, zmean, predictions, corrected (+ the gradients of Σ_kept f_r where wanted,
// df_r/dz_r = (a + b·lse_r)·softmax - c·onehot(gold) - d/V).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> mlm_head_native(
    const Tensor& inputs, const std::optional<Tensor>& weight_opt, const std::optional<Tensor>& bias_opt,
    const Tensor& labels, const std::optional<Tensor>& row_ids_opt, const std::optional<Tensor>& offsets_opt,
    const std::optional<Tensor>& syn_ids_opt, int64_t seed, bool sample, double temperature, bool disallow_correct,
    int64_t ignore_index, bool want_inputs, bool want_weight, bool want_bias, int64_t chunk_rows, double coef_a,
    double coef_b, double coef_c, double coef_d) {
  const Tensor weight = contiguous_or_undefined(weight_opt);
  const Tensor bias = contiguous_or_undefined(bias_opt);
  check_inputs(inputs, weight, bias, labels);
  const Tensor row_ids = check_table_and_row_ids(contiguous_or_undefined(row_ids_opt),
                                                 contiguous_or_undefined(offsets_opt),
                                                 contiguous_or_undefined(syn_ids_opt), inputs.size(0),
                                                 vocab_of(inputs, weight));
  const uint64_t useed = static_cast<uint64_t>(seed);
  const Options options{sample, temperature, disallow_correct, ignore_index, static_cast<uint32_t>(useed),
                        static_cast<uint32_t>(useed >> 32)};
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs.scalar_type(), "mlm_head_native", [&] {
    HeadCall<scalar_t> call;
    call.set_operands(inputs, weight, bias, labels);
    call.row_ids = row_ids.defined() ? row_ids.contiguous() : row_ids;
    call.offsets = contiguous_or_undefined(offsets_opt);
    call.syn_ids = contiguous_or_undefined(syn_ids_opt);
    call.options = options;
    call.backward = false;
    using acc_t = typename HeadCall<scalar_t>::acc_t;
    call.fused[0] = static_cast<acc_t>(coef_a);
    call.fused[1] = static_cast<acc_t>(coef_b);
    call.fused[2] = static_cast<acc_t>(coef_c);
    call.fused[3] = static_cast<acc_t>(coef_d);
    call.want_inputs = want_inputs;
    call.want_weight = want_weight && weight.defined();
    call.want_bias = want_bias && call.bias.defined();
    call.chunk_rows = chunk_rows;
    call.run();
    out = {call.nll, call.lse, call.zmean, call.predictions, call.corrected, call.d_inputs, call.d_weight,
           call.d_bias};
  });
  return out;
}

// mlm_head_native_backward: gradients of Σ_r f_r, df_r/dz_r = α_r·softmax - γ_r·onehot(gold) - δ_r/V with
// (α, γ, δ) = coef[:, r], re-forming each chunk's logits.
// Vocabulary parallelism (vocab_all > 0): the head holds ids [vocab_start, vocab_start + V) of vocab_all, labels are
// global ids, lse the rows' global lse and shard_other [N] their global 1 - p(gold); δ divides by vocab_all.
Grads mlm_head_native_backward(const Tensor& inputs, const std::optional<Tensor>& weight_opt,
                               const std::optional<Tensor>& bias_opt, const Tensor& labels, const Tensor& lse,
                               const Tensor& coef, bool want_inputs, bool want_weight, bool want_bias,
                               int64_t chunk_rows, const std::optional<Tensor>& shard_other_opt, int64_t vocab_start,
                               int64_t vocab_all) {
  const Tensor weight = contiguous_or_undefined(weight_opt);
  const Tensor bias = contiguous_or_undefined(bias_opt);
  check_inputs(inputs, weight, bias, labels);
  check_rows("lse", lse, inputs.size(0));
  check_coef(coef, inputs.size(0));
  check_block(vocab_start, vocab_all, vocab_of(inputs, weight));
  const Tensor shard_other = contiguous_or_undefined(shard_other_opt);
  TORCH_CHECK_VALUE(shard_other.defined() == (vocab_all > 0),
                    "shard_other: expected it exactly when vocab_all > 0 (a vocabulary block)");
  if (shard_other.defined()) check_rows("shard_other", shard_other, inputs.size(0));
  Grads out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs.scalar_type(), "mlm_head_native_backward",
                                  [&] {
    using acc_t = typename HeadCall<scalar_t>::acc_t;
    const auto acc_type = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
    HeadCall<scalar_t> call;
    call.set_operands(inputs, weight, bias, labels);
    call.options = Options{false, 1.0, false, std::numeric_limits<int64_t>::min(), 0u, 0u};
    call.backward = true;
    call.lse_in = lse.to(acc_type).contiguous();
    call.coef_in = coef.to(acc_type).contiguous();
    call.vocab_start = vocab_start;
    call.vocab_all = vocab_all;
    if (shard_other.defined()) call.shard_other = shard_other.to(acc_type).contiguous();
    call.want_inputs = want_inputs;
    call.want_weight = want_weight && weight.defined();
    call.want_bias = want_bias && call.bias.defined();
    call.chunk_rows = chunk_rows;
    call.run();
    out = {call.d_inputs, call.d_weight, call.d_bias};
  });
  return out;
}

// mlm_shard_stats_native: a vocabulary block's per-row partial statistics (DESIGN, vocabulary parallelism): the head
// holds ids [vocab_start, vocab_start + V) of vocab_all; labels are global ids.  stats [5, N] in the compute dtype:
// the block's max logit, Σ_{v≠gold} exp(z_v − max) (all v when the gold id is another block's), the gold logit (0
// there), Σ z, the best (noisy) score; best_ids [N] its global id (Gumbel noise keyed by the global id).  Rows with
// the ignore_index: zeros, best −inf, id vocab_all.
std::tuple<Tensor, Tensor> mlm_shard_stats_native(
    const Tensor& inputs, const std::optional<Tensor>& weight_opt, const std::optional<Tensor>& bias_opt,
    const Tensor& labels, const std::optional<Tensor>& row_ids_opt, int64_t seed, bool sample, double temperature,
    bool disallow_correct, int64_t ignore_index, int64_t vocab_start, int64_t vocab_all, int64_t chunk_rows) {
  const Tensor weight = contiguous_or_undefined(weight_opt);
  const Tensor bias = contiguous_or_undefined(bias_opt);
  check_inputs(inputs, weight, bias, labels);
  TORCH_CHECK_VALUE(vocab_all > 0, "vocab_all: expected the whole vocabulary's size (> 0), got ", vocab_all);
  check_block(vocab_start, vocab_all, vocab_of(inputs, weight));
  const Tensor row_ids = check_table_and_row_ids(contiguous_or_undefined(row_ids_opt), Tensor(), Tensor(),
                                                 inputs.size(0), vocab_all);
  const uint64_t useed = static_cast<uint64_t>(seed);
  std::tuple<Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs.scalar_type(), "mlm_shard_stats_native", [&] {
    HeadCall<scalar_t> call;
    call.set_operands(inputs, weight, bias, labels);
    call.row_ids = row_ids;
    call.options = Options{sample, temperature, disallow_correct, ignore_index, static_cast<uint32_t>(useed),
                           static_cast<uint32_t>(useed >> 32)};
    call.backward = false;
    call.want_inputs = call.want_weight = call.want_bias = false;
    call.chunk_rows = chunk_rows;
    call.vocab_start = vocab_start;
    call.vocab_all = vocab_all;
    call.run();
    out = {call.stats, call.best_ids};
  });
  return out;
}

TORCH_LIBRARY_IMPL(tnops, CPU, m) {
  m.impl("mlm_head_native", &mlm_head_native);
  m.impl("mlm_head_native_backward", &mlm_head_native_backward);
  m.impl("mlm_shard_stats_native", &mlm_shard_stats_native);
}

}  // namespace tnops
