// HeadCall, the fused generator-head objective for CPU tensors behind tnops::mlm_head_native(_backward) and
// tnops::mlm_shard_stats_native (csrc/mlm_head_cpu.cpp, its only includer; DESIGN §4, native).
//
//
// Per masked row it returns nll = lse − z_gold, lse and zmean = Σ_v z_v / V (bias included; summed in the max
// pass), and the gradients of Σ_r f_r with the generic row coefficients (α_r, γ_r, δ_r):
//   df_r/dz_r = α_r·softmax(z_r) − γ_r·onehot(gold_r) − δ_r/V
// (forward: α = a + b·lse, γ = c, δ = d on kept rows, decided in the pass, 0 elsewhere; backward: coef [3, N]).
// Rows that carry work (masked rows in the forward pass, rows with a nonzero coefficient in the backward)
// are gathered and processed in chunks.  First one O(N) pass checks every index a visited row dereferences
// (its label in [0, V), its row id in [0, 2^32), its gold token's CSR row inside syn_ids) and raises ValueError
// naming the argument before any GEMM or write: under torch.compile the Python checks are skipped.  Per chunk:
//   1. one GEMM writes the chunk's logits z = x·Wᵀ into a buffer preallocated once per call (at::mm_out);
//   2. one OpenMP pass per row, while the row is in cache: bias, running max, gold logit, argmax or
//      Gumbel-max (philox.h: the torch path's Philox words and Gumbel transform, bit for bit), the
//      disallow-correct exclusion, the hard-correction check (binary search in the CSR row of the gold
//      token), then e = exp(z - max) written in place with its sum s and, summed apart, other = Σ_{v≠gold} e_v;
//   3. with gradients wanted, three more GEMMs give dh, dW, db:  dz = (α/s)·e' with e'_v = e_v (v ≠ gold),
//      e'_gold = e_gold - (γ/α)·s = -other + ((α - γ)/α)·s, exact (α = γ: -other), so nothing cancels when
//      p(gold) → 1 (a trained head; forming (α/s)·(e·W) - γ·W[gold] subtracts two nearly equal rounded rows);
//      δ ≠ 0 subtracts δ·s/(α·V) from every entry (one extra pass, only then); α = 0: e' = dz, scale 1
//      (mlm_rows.h: form_row_grad).  float and double rows keep e' and fold the row scale into the GEMMs' other
//      side (no extra pass over [C, V]): dh = (α/s)·(e'·W),  dW += e'ᵀ·((α/s)·x),  db += e'ᵀ·(α/s);  half rows
//      get dz itself, formed in fp32 and narrowed once (what plain PyTorch's half GEMMs read): dh = dz·W,
//      dW += dzᵀ·x, db += Σ_rows dz.
// Rows whose three coefficients are 0 (ignored, corrected) cost no gradient work beyond their GEMM rows, and a
// NaN there is selected out, never multiplied by 0.
// Half inputs (bfloat16, float16) run half GEMMs (oneDNN; fp32 accumulation inside) with fp32 row maths
// and fp32 dW/db accumulators across chunks; float64 inputs run in float64.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "mlm_checks.h"
#include "mlm_rows.h"

namespace tnops {
namespace {

// What one call computes, for one dtype.  `inputs` [N, E] hidden states (or [N, V] logits when weight is
// undefined); backward: `coef_in` [3, N] the rows' (α, γ, δ) and `lse_in` [N] the given log-sum-exp (the pass only
// re-forms e = exp(z - lse)); forward: `fused` (a, b, c, d), α = a + b·lse, γ = c, δ = d on kept rows.
template <typename scalar_t>
struct HeadCall {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  at::Tensor inputs, weight, bias, labels, row_ids, offsets, syn_ids;
  Options options;
  bool backward;           // true: lse and coef are given, no prediction
  at::Tensor lse_in, coef_in;
  acc_t fused[4] = {1, 0, 1, 0};
  bool want_inputs, want_weight, want_bias;
  int64_t chunk_rows;
  // Vocabulary parallelism (vocab_all > 0): the head holds ids [vocab_start, vocab_start + V) of vocab_all; labels
  // are global ids.  Forward: per-row partial statistics (`stats`, `best_ids`), no gradients; backward: lse_in is
  // the global lse and shard_other [N] each row's global 1 - p(gold) (sum = 1, see form_row_grad).
  int64_t vocab_start = 0, vocab_all = 0;
  at::Tensor shard_other;

  // outputs
  at::Tensor nll, lse, zmean, predictions, corrected, d_inputs, d_weight, d_bias;

  // The head's operands (weight and bias already contiguous or undefined).
  void set_operands(const at::Tensor& in, const at::Tensor& w, const at::Tensor& b, const at::Tensor& y) {
    inputs = in.contiguous();
    weight = w;
    bias = b;
    labels = y.contiguous();
  }
  at::Tensor stats, best_ids;  // vocabulary-parallel forward: [5, N] (max, other, gold logit, Σ z, best score), [N]

  // The rows that carry work (forward: label != ignore_index; backward: a coefficient != 0), every index they
  // dereference checked first: the label in [0, V), the row id in [0, 2^32), the gold token's CSR row inside
  // syn_ids.  One O(N) pass before any GEMM or write; under torch.compile the Python checks are skipped, these are
  // not.
  std::vector<int64_t> rows_to_visit(int64_t vocab, bool has_table) const {
    const int64_t n = labels.size(0);
    const int64_t* label = labels.data_ptr<int64_t>();
    const int64_t* row_id = row_ids.defined() ? row_ids.data_ptr<int64_t>() : nullptr;
    const int32_t* off = has_table ? offsets.data_ptr<int32_t>() : nullptr;
    const int64_t nnz = has_table ? syn_ids.numel() : 0;
    const acc_t* coef = backward ? coef_in.data_ptr<acc_t>() : nullptr;
    auto idle = [&](int64_t r) { return coef[r] == 0 && coef[n + r] == 0 && coef[2 * n + r] == 0; };
    std::vector<int64_t> visit;
    const int64_t ids = vocab_all > 0 ? vocab_all : vocab;  // labels are ids of the whole vocabulary
    for (int64_t r = 0; r < n; ++r) {
      if (row_id) {
        TORCH_CHECK_VALUE(row_id[r] >= 0 && row_id[r] <= int64_t{0xFFFFFFFF},
                          "row_ids: expected values in [0, 2^32), found ", row_id[r]);
      }
      if (backward ? idle(r) : label[r] == options.ignore_index) continue;
      const int64_t gold = label[r];
      if (gold < 0 || gold >= ids) {
        TORCH_CHECK_VALUE(!backward, "labels: expected ids in [0, ", ids, ") on rows with coef != 0, found ", gold);
        TORCH_CHECK_VALUE(false, "labels: expected ids in [0, ", ids, ") or ignore_index=", options.ignore_index,
                          ", found ", gold);
      }
      if (off) {
        const int64_t lo = off[gold], hi = off[gold + 1];
        TORCH_CHECK_VALUE(0 <= lo && lo <= hi && hi <= nnz, "syn_offsets: expected 0 <= offsets[", gold,
                          "] <= offsets[", gold + 1, "] <= ", nnz, " (the number of syn_ids), found ", lo, " and ", hi);
      }
      visit.push_back(r);
    }
    return visit;
  }

  void run() {
    const int64_t n = labels.size(0);
    const bool has_weight = weight.defined();
    const int64_t vocab = has_weight ? weight.size(0) : inputs.size(1);
    const bool has_table = !backward && offsets.defined() && syn_ids.defined() && syn_ids.numel() > 0;
    const std::vector<int64_t> visit = rows_to_visit(vocab, has_table);
    const auto acc_type = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
    const auto opts = inputs.options();
    nll = at::zeros({n}, opts.dtype(acc_type));
    lse = at::zeros({n}, opts.dtype(acc_type));
    zmean = at::zeros({n}, opts.dtype(acc_type));
    predictions = at::full({n}, options.ignore_index, opts.dtype(at::kLong));
    corrected = at::zeros({n}, opts.dtype(at::kBool));
    const bool sharded = vocab_all > 0;
    if (sharded && !backward) {
      stats = at::zeros({5, n}, opts.dtype(acc_type));
      stats[4].fill_(-std::numeric_limits<double>::infinity());
      best_ids = at::full({n}, vocab_all, opts.dtype(at::kLong));
    }
    acc_t* stats_p = stats.defined() ? stats.data_ptr<acc_t>() : nullptr;
    int64_t* best_p = best_ids.defined() ? best_ids.data_ptr<int64_t>() : nullptr;
    const acc_t* other_given = sharded && backward ? shard_other.data_ptr<acc_t>() : nullptr;
    const bool any_grad = want_inputs || want_weight || want_bias;
    // fp32 (fp64) accumulators; cast to the input dtypes at the end
    at::Tensor dh_acc = want_inputs ? at::zeros(inputs.sizes(), opts.dtype(acc_type)) : at::Tensor();
    at::Tensor dw_acc = want_weight && has_weight ? at::zeros(weight.sizes(), opts.dtype(acc_type)) : at::Tensor();
    at::Tensor db_acc = want_bias && bias.defined() ? at::zeros({vocab}, opts.dtype(acc_type)) : at::Tensor();
    if (visit.empty()) { finish(dh_acc, dw_acc, db_acc); return; }

    const int64_t* label = labels.data_ptr<int64_t>();
    const int64_t* row_id = row_ids.defined() ? row_ids.data_ptr<int64_t>() : nullptr;
    const int32_t* off = has_table ? offsets.data_ptr<int32_t>() : nullptr;
    const int32_t* syn = has_table ? syn_ids.data_ptr<int32_t>() : nullptr;
    const acc_t* coef_given = backward ? coef_in.data_ptr<acc_t>() : nullptr;
    const acc_t* lse_given = backward ? lse_in.data_ptr<acc_t>() : nullptr;
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(chunk_rows, visit.size()));
    at::Tensor bias_acc = bias.defined() ? bias.to(acc_type).contiguous() : at::Tensor();
    const acc_t* b = bias.defined() ? bias_acc.data_ptr<acc_t>() : nullptr;
    // preallocated once per call
    at::Tensor logits = at::empty({chunk, vocab}, opts);          // GEMM output, then e' in place
    constexpr bool in_place = std::is_same_v<scalar_t, acc_t>;  // half rows get a per-thread fp32 row buffer
    at::Tensor index = at::empty({chunk}, opts.dtype(at::kLong));
    const int64_t width = inputs.size(1);
    at::Tensor x = has_weight ? at::empty({chunk, width}, opts) : at::Tensor();
    at::Tensor row_scale = at::empty({chunk}, opts.dtype(acc_type));  // α / s per row (0: no work, 1: dz)
    acc_t* dh = want_inputs ? dh_acc.data_ptr<acc_t>() : nullptr;
    at::Tensor tmp_h = want_inputs && has_weight ? at::empty({chunk, inputs.size(1)}, opts) : at::Tensor();
    at::Tensor weight_t = has_weight ? weight.t() : at::Tensor();
    acc_t* nll_p = nll.data_ptr<acc_t>();
    acc_t* lse_p = lse.data_ptr<acc_t>();
    acc_t* zmean_p = zmean.data_ptr<acc_t>();
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
      scalar_t* xp = has_weight && dw_acc.defined() ? xc.data_ptr<scalar_t>() : nullptr;
      acc_t* scale_p = row_scale.data_ptr<acc_t>();
      const int64_t* rows = visit.data() + start;
      at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
        std::vector<acc_t> noise(kNoiseBlock);
        std::vector<acc_t> row_buffer(in_place ? 0 : vocab);
        for (int64_t i = begin; i < end; ++i) {
          const int64_t r = rows[i];
          scalar_t* zs = zp + i * vocab;
          acc_t* zr = in_place ? reinterpret_cast<acc_t*>(zs) : row_buffer.data();
          if (!in_place || b) widen(zs, b, zr, vocab);
          // the gold id's index in this head's rows; -1: another rank's (vocabulary parallelism)
          const int64_t gold = !sharded ? label[r]
              : label[r] >= vocab_start && label[r] < vocab_start + vocab ? label[r] - vocab_start : -1;
          acc_t alpha, gamma, delta, other, sum;
          if (backward) {  // e = exp(z - lse), normalised by its own sum: dz is the softmax of these logits
            acc_t e_gold;
            other = exp_apart(zr, lse_given[r], vocab, gold, e_gold);
            sum = other + e_gold;
            if (sharded) {  // a block of the row: the global lse normalises it, the row's 1 - p(gold) is given
              other = other_given[r];
              sum = 1;
            }
            alpha = coef_given[r];
            gamma = coef_given[n + r];
            delta = coef_given[2 * n + r];
          } else {
            const uint32_t key = static_cast<uint32_t>(row_id ? row_id[r] : r);
            RowResult<acc_t> res = row_pass<acc_t>(zr, vocab, gold, vocab_start, key, options, noise.data());
            if (sharded) {  // partial statistics; the caller combines the ranks' rows
              const acc_t parts[5] = {res.max, res.other, res.gold_logit, res.total, res.best};
              for (int k = 0; k < 5; ++k) stats_p[k * n + r] = parts[k];
              best_p[r] = vocab_start + res.prediction;
              continue;
            }
            const acc_t row_lse = res.max + std::log(res.sum);
            const bool fixed = has_table && res.prediction != gold && listed(off, syn, gold, res.prediction);
            lse_p[r] = row_lse;
            zmean_p[r] = res.total / static_cast<acc_t>(vocab);
            pred_p[r] = res.prediction;
            corr_p[r] = fixed;
            // gold is the max: nll = log(s) = log1p(other), exact where p(gold) → 1 (lse - z_gold would cancel);
            // corrected rows keep theirs (hard correction is applied above, from `corrected`)
            const bool gold_max = res.gold_logit == res.max && std::isfinite(res.max);
            nll_p[r] = gold_max ? std::log1p(res.other) : row_lse - res.gold_logit;
            alpha = fixed ? acc_t(0) : fused[1] == 0 ? fused[0] : fused[0] + fused[1] * row_lse;
            gamma = fixed ? acc_t(0) : fused[2];
            delta = fixed ? acc_t(0) : fused[3];
            other = res.other;
            sum = res.sum;
          }
          if (!any_grad) continue;
          // dz = α·e/s - γ·onehot(gold) - δ/V = scale·e' (form_row_grad).  float/double: e' stays in the buffer
          // and the row scale goes to the GEMMs' other side (no extra pass); half: dz itself is formed in fp32
          // and narrowed once, so the half GEMMs read what plain PyTorch's would (row scale 1).
          if (alpha == 0 && gamma == 0 && delta == 0) {  // selected out, never 0·e nor 0·x (either may be NaN)
            std::fill(zs, zs + vocab, scalar_t(0));
            if (xp) std::fill(xp + i * width, xp + (i + 1) * width, scalar_t(0));  // dW's GEMM reads the row
            scale_p[i] = 0;
            continue;
          }
          const acc_t scale = form_row_grad(zr, vocab, gold, alpha, gamma, delta, other, sum,
                                            sharded ? vocab_all : vocab);
          if constexpr (in_place) {
            scale_p[i] = scale;
          } else {
            scale_row(zr, scale, zs, vocab);
            scale_p[i] = 1;
          }
          if (!has_weight && dh) scale_row(zr, scale, dh + r * vocab, vocab);  // logits given: dh rows are dz
        }
      });
      if (any_grad) accumulate(zc, xc, rows, scale_p, tmp_h, dh_acc, dw_acc, db_acc);
    }
    finish(dh_acc, dw_acc, db_acc);
  }

  // The chunk's rows e' [c, V] (input dtype) with their row scales (dz = scale·e'; half: e' = dz, scale 1) into
  // the fp32 (fp64) accumulators: dh = scale·(e'·W), dW += e'ᵀ·(scale·x), db += e'ᵀ·scale.  Half GEMMs accumulate
  // in fp32 inside; each chunk's dW partial and db column sums are added in fp32.  (Logits given: the dh rows were
  // written in the row pass.)
  void accumulate(const at::Tensor& e, const at::Tensor& xc, const int64_t* rows, const acc_t* scale,
                  at::Tensor& tmp_h, at::Tensor& dh_acc, at::Tensor& dw_acc, at::Tensor& db_acc) {
    const int64_t c = e.size(0);
    const auto acc_type = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
    at::Tensor scale_t = at::from_blob(const_cast<acc_t*>(scale), {c}, e.options().dtype(acc_type));
    if (dh_acc.defined() && weight.defined()) {
      const int64_t width = weight.size(1);
      at::Tensor th = tmp_h.narrow(0, 0, c);
      at::mm_out(th, e, weight);
      const scalar_t* thp = th.data_ptr<scalar_t>();
      acc_t* dh = dh_acc.data_ptr<acc_t>();
      for (int64_t i = 0; i < c; ++i) {
        acc_t* out = dh + rows[i] * width;
        for (int64_t k = 0; k < width; ++k) out[k] = static_cast<acc_t>(thp[i * width + k]) * scale[i];
      }
    }
    if (dw_acc.defined()) {
      at::Tensor xs = (xc.to(acc_type) * scale_t.unsqueeze(1)).to(xc.scalar_type());
      if (std::is_same_v<scalar_t, acc_t>) {
        dw_acc.addmm_(e.t(), xs);
      } else {
        if (!dw_partial.defined()) dw_partial = at::empty(dw_acc.sizes(), e.options());
        at::mm_out(dw_partial, e.t(), xs);  // half GEMM, fp32 inside; chunk partials summed in fp32
        dw_acc.add_(dw_partial);
      }
    }
    if (db_acc.defined()) {
      if (std::is_same_v<scalar_t, acc_t>) {
        db_acc.add_(at::mv(e.t(), scale_t));
      } else {
        db_acc.add_(at::sum(e, {0}, false, acc_type));  // half dz: column sums in fp32
      }
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
}  // namespace tnops
