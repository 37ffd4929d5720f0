// The argument checks of the fused head's ops (csrc/mlm_head_cpu.cpp; HeadCall in mlm_head_call.h): shapes, dtypes
// and devices of every argument a kernel reads, TypeError for a dtype and ValueError otherwise, each naming the
// argument.  The values of the indices are checked in HeadCall::rows_to_visit, before any GEMM or write.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace tnops {
namespace {

using at::Tensor;

Tensor contiguous_or_undefined(const std::optional<Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : Tensor();
}

// Shapes, dtypes and devices of every argument a kernel reads (TypeError for a dtype, ValueError otherwise); the
// values of the indices are checked in HeadCall::rows_to_visit.
void check_inputs(const Tensor& inputs, const Tensor& weight, const Tensor& bias, const Tensor& labels) {
  TORCH_CHECK_VALUE(inputs.device().is_cpu() && inputs.dim() == 2, "inputs: expected a 2-D CPU tensor, got ",
                    inputs.dim(), "-D on ", inputs.device());
  TORCH_CHECK_TYPE(at::isFloatingType(inputs.scalar_type()),
                   "inputs: expected float32, bfloat16, float16 or float64, got ", inputs.scalar_type());
  const int64_t n = inputs.size(0);
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, "labels: expected int64, got ", labels.scalar_type());
  TORCH_CHECK_VALUE(labels.device().is_cpu() && labels.dim() == 1 && labels.size(0) == n,
                    "labels: expected a CPU tensor [", n, "] matching inputs [N, *], got ", labels.sizes());
  if (weight.defined()) {
    TORCH_CHECK_TYPE(weight.scalar_type() == inputs.scalar_type(), "weight: expected the inputs' dtype ",
                     inputs.scalar_type(), ", got ", weight.scalar_type());
    TORCH_CHECK_VALUE(weight.device().is_cpu() && weight.dim() == 2 && weight.size(1) == inputs.size(1),
                      "weight: expected a CPU tensor [V, ", inputs.size(1), "], got ", weight.sizes());
  }
  const int64_t vocab = weight.defined() ? weight.size(0) : inputs.size(1);
  if (bias.defined()) {
    TORCH_CHECK_TYPE(at::isFloatingType(bias.scalar_type()), "bias: expected a float tensor, got ", bias.scalar_type());
    TORCH_CHECK_VALUE(bias.device().is_cpu() && bias.dim() == 1 && bias.size(0) == vocab,
                      "bias: expected a CPU tensor [", vocab, "], got ", bias.sizes());
  }
}

int64_t vocab_of(const Tensor& inputs, const Tensor& weight) {
  return weight.defined() ? weight.size(0) : inputs.size(1);
}

// row_ids int32/int64 [N] (returned as int64), syn_offsets int32 [V+1] and syn_ids int32 [nnz], both or neither.
Tensor check_table_and_row_ids(const Tensor& row_ids, const Tensor& offsets, const Tensor& syn_ids, int64_t n,
                               int64_t vocab) {
  if (row_ids.defined()) {
    TORCH_CHECK_TYPE(row_ids.scalar_type() == at::kLong || row_ids.scalar_type() == at::kInt,
                     "row_ids: expected int64 or int32, got ", row_ids.scalar_type());
    TORCH_CHECK_VALUE(row_ids.device().is_cpu() && row_ids.dim() == 1 && row_ids.size(0) == n,
                      "row_ids: expected a CPU tensor [", n, "] (one per row), got ", row_ids.sizes());
  }
  TORCH_CHECK_VALUE(offsets.defined() == syn_ids.defined(), "syn_offsets, syn_ids: expected both or neither");
  if (offsets.defined()) {
    TORCH_CHECK_TYPE(offsets.scalar_type() == at::kInt && syn_ids.scalar_type() == at::kInt,
                     "syn_offsets, syn_ids: expected int32 (a CSR table), got ", offsets.scalar_type(), ", ",
                     syn_ids.scalar_type());
    TORCH_CHECK_VALUE(offsets.device().is_cpu() && offsets.dim() == 1 && offsets.size(0) == vocab + 1,
                      "syn_offsets: expected a CPU tensor [", vocab + 1, "] (V + 1 entries), got ", offsets.sizes());
    TORCH_CHECK_VALUE(syn_ids.device().is_cpu() && syn_ids.dim() == 1, "syn_ids: expected a 1-D CPU tensor, got ",
                      syn_ids.sizes());
  }
  return row_ids.defined() ? row_ids.to(at::kLong) : row_ids;
}

// lse of the backward: float [N]; coef: float [3, N] (rows α, γ, δ).
void check_rows(const char* name, const Tensor& t, int64_t n) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, ": expected a float tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.dim() == 1 && t.size(0) == n, name, ": expected a CPU tensor [", n,
                    "] (one per row), got ", t.sizes());
}
// A vocabulary block [start, start + rows) of a vocabulary of `all` ids (all == 0: the whole vocabulary, start 0).
void check_block(int64_t start, int64_t all, int64_t rows) {
  TORCH_CHECK_VALUE(all >= 0, "vocab_all: expected the whole vocabulary's size (or 0), got ", all);
  if (all == 0) {
    TORCH_CHECK_VALUE(start == 0, "vocab_start: expected 0 without vocab_all, got ", start);
    return;
  }
  TORCH_CHECK_VALUE(start >= 0 && start + rows <= all, "vocab_start: expected the block [vocab_start, vocab_start + ",
                    rows, ") inside [0, ", all, ") (vocab_all), got vocab_start=", start);
}
void check_coef(const Tensor& t, int64_t n) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "coef: expected a float tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.dim() == 2 && t.size(0) == 3 && t.size(1) == n,
                    "coef: expected a CPU tensor [3, ", n, "] (rows alpha, gamma, delta), got ", t.sizes());
}
}  // namespace
}  // namespace tnops
