// The fused generator-head objective for CPU tensors: tnops::mlm_head_native(_backward) (DESIGN §4, native).
//
// Rows that carry work (masked rows in the forward pass, rows with a nonzero coefficient in the backward)
// are gathered and processed in chunks.  Per chunk:
//   1. one GEMM writes the chunk's logits z = x·Wᵀ into a buffer preallocated once per call (at::mm_out);
//   2. one OpenMP pass per row, while the row is in cache: bias, running max, gold logit, argmax or
//      Gumbel-max (philox.h: the torch path's Philox words and Gumbel transform, bit for bit), the
//      disallow-correct exclusion, the hard-correction check (binary search in the CSR row of the gold
//      token), then e = exp(z - max) written in place and its sum s;
//   3. with gradients wanted, three more GEMMs give dh, dW, db from e without ever normalising the
//      [C, V] buffer:  dz = coef·(e/s - onehot), so  dh = coef/s·(e·W) - coef·W[gold],
//      dW += eᵀ·(coef/s·x) - Σ coef·onehotᵀx,  db += eᵀ·(coef/s) - Σ coef·onehot.
// Rows that are ignored or corrected have coefficient 0 and cost no gradient work beyond their GEMM rows.
// Half inputs (bfloat16, float16) run half GEMMs (oneDNN; fp32 accumulation inside) with fp32 row maths
// and fp32 dW/db accumulators across chunks; float64 inputs run in float64.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "mlm_rows.h"

namespace tnops {
namespace {

// What one call computes, for one dtype.  `inputs` [N, E] hidden states (or [N, V] logits when weight is
// undefined); `coef` [N] the gradient coefficient of each row's CE (forward: 1 on kept rows, decided in the
// pass); `lse_in` [N] given log-sum-exp (backward: the pass only re-forms e = exp(z - lse)).
template <typename scalar_t>
struct HeadCall {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  at::Tensor inputs, weight, bias, labels, row_ids, offsets, syn_ids;
  Options options;
  bool backward;           // true: lse and coef are given, no prediction
  at::Tensor lse_in, coef_in;
  bool want_inputs, want_weight, want_bias;
  int64_t chunk_rows;

  // outputs
  at::Tensor ce, lse, predictions, corrected, d_inputs, d_weight, d_bias;

  void run() {
    const int64_t n = labels.size(0);
    const bool has_weight = weight.defined();
    const int64_t vocab = has_weight ? weight.size(0) : inputs.size(1);
    const auto acc_type = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
    const auto opts = inputs.options();
    ce = at::zeros({n}, opts.dtype(acc_type));
    lse = at::zeros({n}, opts.dtype(acc_type));
    predictions = at::full({n}, options.ignore_index, opts.dtype(at::kLong));
    corrected = at::zeros({n}, opts.dtype(at::kBool));
    const bool any_grad = want_inputs || want_weight || want_bias;
    // fp32 (fp64) accumulators; cast to the input dtypes at the end
    at::Tensor dh_acc = want_inputs ? at::zeros(inputs.sizes(), opts.dtype(acc_type)) : at::Tensor();
    at::Tensor dw_acc = want_weight && has_weight ? at::zeros(weight.sizes(), opts.dtype(acc_type)) : at::Tensor();
    at::Tensor db_acc = want_bias && bias.defined() ? at::zeros({vocab}, opts.dtype(acc_type)) : at::Tensor();

    const int64_t* label = labels.data_ptr<int64_t>();
    const int64_t* row_id = row_ids.defined() ? row_ids.data_ptr<int64_t>() : nullptr;
    const bool has_table = offsets.defined() && syn_ids.defined() && syn_ids.numel() > 0;
    const int32_t* off = has_table ? offsets.data_ptr<int32_t>() : nullptr;
    const int32_t* syn = has_table ? syn_ids.data_ptr<int32_t>() : nullptr;
    const acc_t* coef_given = backward ? coef_in.data_ptr<acc_t>() : nullptr;
    const acc_t* lse_given = backward ? lse_in.data_ptr<acc_t>() : nullptr;

    std::vector<int64_t> visit;  // rows that carry work
    for (int64_t r = 0; r < n; ++r) {
      if (backward ? coef_given[r] != 0 : label[r] != options.ignore_index) visit.push_back(r);
    }
    if (visit.empty()) { finish(dh_acc, dw_acc, db_acc); return; }
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(chunk_rows, visit.size()));
    const bool bias_fused = bias.defined();
    at::Tensor bias_acc = bias_fused ? bias.to(acc_type).contiguous() : at::Tensor();
    const acc_t* b = bias_fused ? bias_acc.data_ptr<acc_t>() : nullptr;
    // preallocated once per call
    at::Tensor logits = at::empty({chunk, vocab}, opts);          // GEMM output, then e in place
    constexpr bool in_place = std::is_same_v<scalar_t, acc_t>;  // half rows get a per-thread fp32 row buffer
    at::Tensor index = at::empty({chunk}, opts.dtype(at::kLong));
    at::Tensor x = has_weight ? at::empty({chunk, inputs.size(1)}, opts) : at::Tensor();
    at::Tensor row_scale = at::empty({chunk}, opts.dtype(acc_type));  // coef / s per row
    at::Tensor row_coef = at::empty({chunk}, opts.dtype(acc_type));
    at::Tensor tmp_h = want_inputs && has_weight ? at::empty({chunk, inputs.size(1)}, opts) : at::Tensor();
    at::Tensor weight_t = has_weight ? weight.t() : at::Tensor();
    acc_t* ce_p = ce.data_ptr<acc_t>();
    acc_t* lse_p = lse.data_ptr<acc_t>();
    int64_t* pred_p = predictions.data_ptr<int64_t>();
    bool* corr_p = corrected.data_ptr<bool>();

    for (int64_t start = 0; start < static_cast<int64_t>(visit.size()); start += chunk) {
      const int64_t c = std::min<int64_t>(chunk, visit.size() - start);
      std::memcpy(index.data_ptr<int64_t>(), visit.data() + start, c * sizeof(int64_t));
      at::Tensor idx = index.narrow(0, 0, c);
      at::Tensor zc = logits.narrow(0, 0, c);
      at::Tensor xc;
      if (has_weight) {
        xc = x.narrow(0, 0, c);
        at::index_select_out(xc, inputs, 0, idx);
        at::mm_out(zc, xc, weight_t);
      } else {
        at::index_select_out(zc, inputs, 0, idx);
      }
      scalar_t* zp = zc.data_ptr<scalar_t>();
      acc_t* scale_p = row_scale.data_ptr<acc_t>();
      acc_t* coef_p = row_coef.data_ptr<acc_t>();
      const int64_t* rows = visit.data() + start;
      at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
        std::vector<acc_t> noise(kNoiseBlock);
        std::vector<acc_t> row_buffer(in_place ? 0 : vocab);
        for (int64_t i = begin; i < end; ++i) {
          const int64_t r = rows[i];
          scalar_t* zs = zp + i * vocab;
          acc_t* zr = in_place ? reinterpret_cast<acc_t*>(zs) : row_buffer.data();
          if (!in_place || b) widen(zs, b, zr, vocab);
          const int64_t gold = label[r];
          if (backward) {
            exp_sum(zr, lse_given[r], vocab);
            narrow(zr, zs, vocab);
            coef_p[i] = coef_given[r];
            scale_p[i] = coef_given[r];
            continue;
          }
          const uint32_t key = static_cast<uint32_t>(row_id ? row_id[r] : r);
          RowResult<acc_t> res = row_pass<acc_t>(zr, vocab, gold, key, options, noise.data());
          narrow(zr, zs, vocab);  // half inputs: e back into the half buffer for the GEMMs
          const acc_t row_lse = res.max + std::log(res.sum);
          const bool fixed = has_table && res.prediction != gold && listed(off, syn, gold, res.prediction);
          lse_p[r] = row_lse;
          pred_p[r] = res.prediction;
          corr_p[r] = fixed;
          ce_p[r] = fixed ? acc_t(0) : row_lse - res.gold_logit;
          coef_p[i] = fixed ? acc_t(0) : acc_t(1);
          scale_p[i] = fixed ? acc_t(0) : acc_t(1) / res.sum;
        }
      });
      if (!any_grad) continue;
      accumulate(zc, xc, idx, c, rows, label, coef_p, scale_p, tmp_h, dh_acc, dw_acc, db_acc, vocab);
    }
    finish(dh_acc, dw_acc, db_acc);
  }

  // dz = coef·(e·scale/coef - onehot) rows of the chunk, folded into the three products (see the header).
  void accumulate(const at::Tensor& e, const at::Tensor& xc, const at::Tensor& idx, int64_t c,
                  const int64_t* rows, const int64_t* label, const acc_t* coef, const acc_t* scale,
                  at::Tensor& tmp_h, at::Tensor& dh_acc, at::Tensor& dw_acc, at::Tensor& db_acc,
                  int64_t vocab) {
    const auto acc_type = dh_acc.defined() ? dh_acc.scalar_type() : (std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat);
    at::Tensor scale_t = at::from_blob(const_cast<acc_t*>(scale), {c}, e.options().dtype(acc_type));
    const bool has_weight = weight.defined();
    if (!has_weight) {  // logits given: d_inputs rows are dz itself
      if (dh_acc.defined()) {
        acc_t* dh = dh_acc.data_ptr<acc_t>();
        const scalar_t* ep = e.data_ptr<scalar_t>();
        at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            acc_t* out = dh + rows[i] * vocab;
            const scalar_t* er = ep + i * vocab;
            for (int64_t v = 0; v < vocab; ++v) out[v] = static_cast<acc_t>(er[v]) * scale[i];
            out[label[rows[i]]] -= coef[i];
          }
        });
      }
      return;
    }
    const int64_t width = weight.size(1);
    if (dh_acc.defined()) {  // dh = scale·(e·W) - coef·W[gold]
      at::Tensor th = tmp_h.narrow(0, 0, c);
      at::mm_out(th, e, weight);
      const scalar_t* thp = th.data_ptr<scalar_t>();
      const scalar_t* w = weight.data_ptr<scalar_t>();
      acc_t* dh = dh_acc.data_ptr<acc_t>();
      for (int64_t i = 0; i < c; ++i) {
        const int64_t r = rows[i];
        const scalar_t* wg = w + label[r] * width;
        for (int64_t k = 0; k < width; ++k)
          dh[r * width + k] = static_cast<acc_t>(thp[i * width + k]) * scale[i] - coef[i] * static_cast<acc_t>(wg[k]);
      }
    }
    if (dw_acc.defined()) {  // dW += eᵀ·(scale·x) - Σ coef·onehotᵀx
      at::Tensor xs = (xc.to(acc_type) * scale_t.unsqueeze(1)).to(xc.scalar_type());
      if (std::is_same_v<scalar_t, acc_t>) {
        dw_acc.addmm_(e.t(), xs);
      } else {
        if (!dw_partial.defined()) dw_partial = at::empty(dw_acc.sizes(), e.options());
        at::mm_out(dw_partial, e.t(), xs);  // half GEMM, fp32 inside; chunk partials summed in fp32
        dw_acc.add_(dw_partial);
      }
      acc_t* dw = dw_acc.data_ptr<acc_t>();
      const scalar_t* xp = xc.data_ptr<scalar_t>();
      for (int64_t i = 0; i < c; ++i) {
        acc_t* row = dw + label[rows[i]] * width;
        for (int64_t k = 0; k < width; ++k) row[k] -= coef[i] * static_cast<acc_t>(xp[i * width + k]);
      }
    }
    if (db_acc.defined()) {  // db += eᵀ·scale - Σ coef·onehot
      db_acc.add_(at::mv(e.t(), scale_t.to(e.scalar_type())));
      acc_t* db = db_acc.data_ptr<acc_t>();
      for (int64_t i = 0; i < c; ++i) db[label[rows[i]]] -= coef[i];
    }
  }

  at::Tensor dw_partial;  // half inputs: one chunk's dW, reused

  void finish(const at::Tensor& dh_acc, const at::Tensor& dw_acc, const at::Tensor& db_acc) {
    // a distinct empty tensor per absent gradient: outputs of an op must not alias one another
    auto empty = [&] { return at::empty({0}, inputs.options()); };
    d_inputs = dh_acc.defined() ? dh_acc.to(inputs.scalar_type()) : empty();
    d_weight = dw_acc.defined() ? dw_acc.to(weight.scalar_type()) : empty();
    d_bias = db_acc.defined() ? db_acc.to(bias.scalar_type()) : empty();
  }
};

}  // namespace

using at::Tensor;
using Grads = std::tuple<Tensor, Tensor, Tensor>;

namespace {
Tensor contiguous_or_undefined(const std::optional<Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : Tensor();
}

void check_inputs(const Tensor& inputs, const Tensor& weight, const Tensor& labels) {
  TORCH_CHECK(inputs.device().is_cpu() && inputs.dim() == 2, "inputs: expected a 2-D CPU tensor");
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.dim() == 1 && labels.size(0) == inputs.size(0),
              "labels: expected int64 [N] matching inputs [N, *]");
  TORCH_CHECK(!weight.defined() || (weight.dim() == 2 && weight.size(1) == inputs.size(1) &&
                                    weight.scalar_type() == inputs.scalar_type()),
              "weight: expected [V, E] of the inputs' dtype");
}
}  // namespace

// mlm_head_native: per-row ce, lse, predictions, corrected (+ the gradients of Σ_kept ce where wanted).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> mlm_head_native(
    const Tensor& inputs, const std::optional<Tensor>& weight_opt, const std::optional<Tensor>& bias_opt,
    const Tensor& labels, const std::optional<Tensor>& row_ids_opt, const std::optional<Tensor>& offsets_opt,
    const std::optional<Tensor>& syn_ids_opt, int64_t seed, bool sample, double temperature, bool disallow_correct,
    int64_t ignore_index, bool want_inputs, bool want_weight, bool want_bias, int64_t chunk_rows) {
  const Tensor weight = contiguous_or_undefined(weight_opt);
  check_inputs(inputs, weight, labels);
  const uint64_t useed = static_cast<uint64_t>(seed);
  const Options options{sample, temperature, disallow_correct, ignore_index, static_cast<uint32_t>(useed),
                        static_cast<uint32_t>(useed >> 32)};
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs.scalar_type(), "mlm_head_native", [&] {
    HeadCall<scalar_t> call;
    call.inputs = inputs.contiguous();
    call.weight = weight;
    call.bias = contiguous_or_undefined(bias_opt);
    call.labels = labels.contiguous();
    call.row_ids = contiguous_or_undefined(row_ids_opt);
    call.offsets = contiguous_or_undefined(offsets_opt);
    call.syn_ids = contiguous_or_undefined(syn_ids_opt);
    call.options = options;
    call.backward = false;
    call.want_inputs = want_inputs;
    call.want_weight = want_weight && weight.defined();
    call.want_bias = want_bias && call.bias.defined();
    call.chunk_rows = chunk_rows;
    call.run();
    out = {call.ce, call.lse, call.predictions, call.corrected, call.d_inputs, call.d_weight, call.d_bias};
  });
  return out;
}

// mlm_head_native_backward: gradients of Σ coef[row]·ce[row], re-forming each chunk's logits.
Grads mlm_head_native_backward(const Tensor& inputs, const std::optional<Tensor>& weight_opt,
                               const std::optional<Tensor>& bias_opt, const Tensor& labels, const Tensor& lse,
                               const Tensor& coef, bool want_inputs, bool want_weight, bool want_bias,
                               int64_t chunk_rows) {
  const Tensor weight = contiguous_or_undefined(weight_opt);
  check_inputs(inputs, weight, labels);
  Grads out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, inputs.scalar_type(), "mlm_head_native_backward",
                                  [&] {
    using acc_t = typename HeadCall<scalar_t>::acc_t;
    const auto acc_type = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
    HeadCall<scalar_t> call;
    call.inputs = inputs.contiguous();
    call.weight = weight;
    call.bias = contiguous_or_undefined(bias_opt);
    call.labels = labels.contiguous();
    call.options = Options{false, 1.0, false, std::numeric_limits<int64_t>::min(), 0u, 0u};
    call.backward = true;
    call.lse_in = lse.to(acc_type).contiguous();
    call.coef_in = coef.to(acc_type).contiguous();
    call.want_inputs = want_inputs;
    call.want_weight = want_weight && weight.defined();
    call.want_bias = want_bias && call.bias.defined();
    call.chunk_rows = chunk_rows;
    call.run();
    out = {call.d_inputs, call.d_weight, call.d_bias};
  });
  return out;
}

TORCH_LIBRARY_IMPL(tnops, CPU, m) {
  m.impl("mlm_head_native", &mlm_head_native);
  m.impl("mlm_head_native_backward", &mlm_head_native_backward);
}

}  // namespace tnops
