// The per-row loops of the fused head (HeadCall in csrc/mlm_head_call.h, their only includer): the softmax exponential,
// Gumbel noise blocks, max (+ sum) / first-argmax, widening half rows, forming and scaling a row of dz, and
// row_pass, which runs them over one row.
// Written once as inline templates, instantiated as multiversioned float functions (the hot path) and plain
// double ones.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "philox.h"

namespace tnops {
namespace {

constexpr int64_t kNoiseBlock = 256;  // Gumbel noise is made in blocks of this many vocabulary ids

// The hot loops are compiled for several x86 levels and picked at load time (GCC function multiversioning),
// so one build runs anywhere and uses AVX2/AVX-512 where present.  -ffp-contract=off keeps every clone free
// of FMA contraction, so all clones round alike (bit-identical to the torch path).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TNOPS_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TNOPS_TARGET_CLONES
#endif

// exp(x) for x <= 0 from exact float operations (Cephes' expf scheme): x = n·ln2 + r, |r| <= ln2/2,
// exp(r) by a degree-6 polynomial, 2^n through the exponent bits.  ~1 ulp; vectorises, unlike expf.
inline float exp_nonpositive(float x) {
  const bool tiny = x < -87.0f;  // e^-87 is near FLT_MIN: below it the result is 0
  x = tiny ? -87.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = (p * r) * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return tiny ? 0.0f : y * scale;
}
inline double exp_nonpositive(double x) { return std::exp(x); }

// The Philox words of the kNoiseBlock / 4 quads from quad0 of one row, lane by lane in separate arrays so the loop
// vectorises (inlined into each multiversioned caller, so it is compiled for the caller's instruction set).
__attribute__((always_inline)) inline void philox_quads(uint32_t quad0, uint32_t row_key, uint32_t k0, uint32_t k1,
                                                        uint32_t* w0, uint32_t* w1, uint32_t* w2, uint32_t* w3) {
#pragma omp simd
  for (int64_t q = 0; q < kNoiseBlock / 4; ++q) {
    uint32_t c0 = quad0 + static_cast<uint32_t>(q), c1 = row_key, c2 = 0u, c3 = 0u;
    philox4x32_10(c0, c1, c2, c3, k0, k1);
    w0[q] = c0; w1[q] = c1; w2[q] = c2; w3[q] = c3;
  }
}

// Gumbel noise of vocabulary ids [4·quad0, 4·quad0 + kNoiseBlock) of one row: Philox words for every quad
// (lanes in separate arrays so the loop vectorises), then the transform of philox.h, both over the block.
TNOPS_TARGET_CLONES
void gumbel_block(uint32_t quad0, uint32_t row_key, uint32_t k0, uint32_t k1, float* out) {
  constexpr int64_t kQuads = kNoiseBlock / 4;
  uint32_t w0[kQuads], w1[kQuads], w2[kQuads], w3[kQuads];
  philox_quads(quad0, row_key, k0, k1, w0, w1, w2, w3);
  uint32_t words[kNoiseBlock];
  for (int64_t q = 0; q < kQuads; ++q) {
    words[4 * q] = w0[q]; words[4 * q + 1] = w1[q]; words[4 * q + 2] = w2[q]; words[4 * q + 3] = w3[q];
  }
#pragma omp simd
  for (int64_t v = 0; v < kNoiseBlock; ++v) out[v] = word_to_gumbel(words[v]);
}

// The Philox words of vocabulary ids [4·quad0, 4·quad0 + kNoiseBlock) mapped to their uniforms u (word_to_gumbel's
// first steps, exactly), and the ids whose u exceeds `u_floor`, in order: the only ones whose Gumbel noise
// g = -log(-log u) (increasing in u) can exceed the bound the caller derived u_floor from.  Returns their count.
TNOPS_TARGET_CLONES
int64_t uniform_candidates(uint32_t quad0, uint32_t row_key, uint32_t k0, uint32_t k1, double u_floor,
                           float* u_out, int32_t* ids) {
  constexpr int64_t kQuads = kNoiseBlock / 4;
  uint32_t w0[kQuads], w1[kQuads], w2[kQuads], w3[kQuads];
  philox_quads(quad0, row_key, k0, k1, w0, w1, w2, w3);
  const float floor_f = static_cast<float>(u_floor);  // u are floats: u > u_floor  <=>  u > the float below it
  const float below = floor_f > u_floor ? std::nextafter(floor_f, 0.0f) : floor_f;
#pragma omp simd
  for (int64_t q = 0; q < kQuads; ++q) {
    u_out[4 * q] = word_to_uniform(w0[q]); u_out[4 * q + 1] = word_to_uniform(w1[q]);
    u_out[4 * q + 2] = word_to_uniform(w2[q]); u_out[4 * q + 3] = word_to_uniform(w3[q]);
  }
  int64_t count = 0;
  for (int64_t v = 0; v < kNoiseBlock; ++v) {
    ids[count] = static_cast<int32_t>(v);
    count += u_out[v] > below;
  }
  return count;
}

template <typename acc_t>
struct RowResult {
  acc_t max = -std::numeric_limits<acc_t>::infinity();
  acc_t total = 0;  // Σ_v z_v (bias included), summed in the max pass: zmean = total / V
  acc_t sum = 0;    // s = Σ_v e_v = other + e_gold
  acc_t other = 0;  // Σ_{v != gold} e_v, summed apart: 1 - p(gold) = other / s without cancellation
  acc_t gold_logit = 0;
  acc_t best = 0;          // the winning (noisy) score
  int64_t prediction = 0;  // its index in z[0, V)
};

struct Options {
  bool sample;
  double temperature;  // divided in the compute dtype, as the torch path divides (float(T) for float32)
  bool disallow_correct;
  int64_t ignore_index;
  uint32_t key0, key1;
};

// Binary search of `pred` in the sorted CSR row of `gold`.
inline bool listed(const int32_t* offsets, const int32_t* ids, int64_t gold, int64_t pred) {
  int64_t lo = offsets[gold], hi = offsets[gold + 1];
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ids[mid] < pred) lo = mid + 1; else hi = mid;
  }
  return lo < offsets[gold + 1] && ids[lo] == pred;
}

// The row loops, written once as inline templates and instantiated as multiversioned float functions (the hot
// path) and plain double ones.
template <typename T>
inline T max_body(const T* z, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t v = 0; v < n; ++v) m = z[v] > m ? z[v] : m;
  return m;
}

template <typename T>
inline T max_sum_body(const T* z, int64_t n, T* total) {  // the max pass, summing the row beside it
  T m = -std::numeric_limits<T>::infinity();
  T s = 0;
#pragma omp simd reduction(max : m) reduction(+ : s)
  for (int64_t v = 0; v < n; ++v) {
    m = z[v] > m ? z[v] : m;
    s += z[v];
  }
  *total = s;
  return m;
}

template <typename T>
inline void add_body(T* z, T shift, int64_t n) {  // z <- z + shift in place
#pragma omp simd
  for (int64_t v = 0; v < n; ++v) z[v] = z[v] + shift;
}

template <typename T>
inline T exp_sum_body(T* z, T shift, int64_t n) {  // z <- exp(z - shift) in place; returns the sum
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t v = 0; v < n; ++v) {
    const T e = exp_nonpositive(z[v] - shift);
    z[v] = e;
    s += e;
  }
  return s;
}

template <typename T>
inline void noisy_scores_body(const T* z, T temperature, const float* gumbel, T* out, int64_t n) {
#pragma omp simd
  for (int64_t v = 0; v < n; ++v) out[v] = z[v] / temperature + static_cast<T>(gumbel[v]);
}

TNOPS_TARGET_CLONES float max_of(const float* z, int64_t n) { return max_body(z, n); }
inline double max_of(const double* z, int64_t n) { return max_body(z, n); }
TNOPS_TARGET_CLONES float max_sum_of(const float* z, int64_t n, float* total) { return max_sum_body(z, n, total); }
inline double max_sum_of(const double* z, int64_t n, double* total) { return max_sum_body(z, n, total); }
TNOPS_TARGET_CLONES void add_to_row(float* z, float shift, int64_t n) { add_body(z, shift, n); }
inline void add_to_row(double* z, double shift, int64_t n) { add_body(z, shift, n); }
TNOPS_TARGET_CLONES float exp_sum(float* z, float shift, int64_t n) { return exp_sum_body(z, shift, n); }
inline double exp_sum(double* z, double shift, int64_t n) { return exp_sum_body(z, shift, n); }
TNOPS_TARGET_CLONES void noisy_scores(const float* z, float t, const float* g, float* out, int64_t n) {
  noisy_scores_body(z, t, g, out, n);
}
inline void noisy_scores(const double* z, double t, const float* g, double* out, int64_t n) {
  noisy_scores_body(z, t, g, out, n);
}

// out <- in · scale, in the compute dtype or narrowed to half once: a row of dz = (coef/s)·e' (half inputs: the rows
// the half GEMMs read; logits given: the rows of d inputs).
template <typename T, typename Out>
inline void scale_row_body(const T* in, T scale, Out* out, int64_t n) {
#pragma omp simd
  for (int64_t v = 0; v < n; ++v) out[v] = static_cast<Out>(in[v] * scale);
}
TNOPS_TARGET_CLONES void scale_row(const float* in, float s, float* out, int64_t n) { scale_row_body(in, s, out, n); }
TNOPS_TARGET_CLONES void scale_row(const float* in, float s, at::BFloat16* out, int64_t n) {
  scale_row_body(in, s, out, n);
}
TNOPS_TARGET_CLONES void scale_row(const float* in, float s, at::Half* out, int64_t n) {
  scale_row_body(in, s, out, n);
}
inline void scale_row(const double* in, double s, double* out, int64_t n) { scale_row_body(in, s, out, n); }

// Widen a row of logits to the compute dtype and add the bias.
template <typename In, typename T>
inline void widen_body(const In* in, const T* bias, T* out, int64_t n) {
  if (bias) {
#pragma omp simd
    for (int64_t v = 0; v < n; ++v) out[v] = static_cast<T>(in[v]) + bias[v];
  } else {
#pragma omp simd
    for (int64_t v = 0; v < n; ++v) out[v] = static_cast<T>(in[v]);
  }
}
TNOPS_TARGET_CLONES void widen(const float* in, const float* b, float* out, int64_t n) { widen_body(in, b, out, n); }
TNOPS_TARGET_CLONES void widen(const at::BFloat16* in, const float* b, float* out, int64_t n) {
  widen_body(in, b, out, n);
}
TNOPS_TARGET_CLONES void widen(const at::Half* in, const float* b, float* out, int64_t n) { widen_body(in, b, out, n); }
inline void widen(const double* in, const double* b, double* out, int64_t n) { widen_body(in, b, out, n); }

// Keep (best, best_id) the first index of the largest score seen so far (ties -> lowest id) over scores[0, n),
// which hold vocabulary ids [offset, offset + n).
template <typename acc_t>
inline void best_of(const acc_t* scores, int64_t n, int64_t offset, acc_t& best, int64_t& best_id) {
  const acc_t block_max = max_of(scores, n);
  if (best_id >= 0 && !(block_max > best)) return;
  for (int64_t v = 0; v < n; ++v) {
    if (scores[v] == block_max) { best = block_max; best_id = offset + v; return; }
  }
  if (best_id < 0) { best = block_max; best_id = offset; }  // all NaN: the first id
}

// e = exp(z - shift) in place over z[0, V), the gold entry summed apart: returns Σ_{v != gold} e_v and sets
// e_gold (gold < 0: no gold entry here, e_gold = 0).  Summing the others on their own keeps 1 - p(gold) = other / s exact to rounding when p(gold) → 1.
template <typename acc_t>
inline acc_t exp_apart(acc_t* z, acc_t shift, int64_t vocab, int64_t gold, acc_t& e_gold) {
  if (gold < 0) {  // the gold id is not among z's (another rank's vocabulary block)
    e_gold = 0;
    return exp_sum(z, shift, vocab);
  }
  const acc_t z_gold = z[gold];
  z[gold] = -std::numeric_limits<acc_t>::infinity();  // exp -> 0 in the vector pass
  const acc_t other = exp_sum(z, shift, vocab);
  e_gold = exp_nonpositive(z_gold - shift);  // the same operations as the vector pass (-ffp-contract=off)
  z[gold] = e_gold;
  return other;
}

// Pass over one row of logits z[0, V) (bias already added): max, prediction, gold logit; then e = exp(z - max)
// in place, its sum and the sum of the other entries.  `gold` is the row's label, checked in [0, V), or -1 when the
// gold id is not among z's.  z holds vocabulary ids [offset, offset + V) (a vocabulary-parallel rank's block; 0 on
// one process): the Gumbel noise of an entry is keyed by its id, so every block samples what the whole row would.
template <typename acc_t>
RowResult<acc_t> row_pass(acc_t* z, int64_t vocab, int64_t gold, int64_t offset, uint32_t row_key, const Options& o,
                          acc_t* noise) {
  RowResult<acc_t> res;
  acc_t m = max_sum_of(z, vocab, &res.total);
  res.max = m;
  res.gold_logit = gold >= 0 ? z[gold] : acc_t(0);
  acc_t best = -std::numeric_limits<acc_t>::infinity();
  int64_t best_id = -1;
  const acc_t saved_gold = res.gold_logit;
  const bool exclude = o.disallow_correct && gold >= 0;
  if (exclude) z[gold] = -std::numeric_limits<acc_t>::infinity();
  if (!o.sample) {
    best_of(z, vocab, 0, best, best_id);
  } else {
    const acc_t temperature = static_cast<acc_t>(o.temperature);
    float gumbel[kNoiseBlock], uniform[kNoiseBlock];
    int32_t ids[kNoiseBlock];
    // Noise blocks of kNoiseBlock ids aligned to Philox quads in the global ids: [g0, g0 + kNoiseBlock) holds the
    // entries lo..hi of z; the first block skips the ids before offset, the last stops at offset + V.
    for (int64_t g0 = offset - (offset & 3); g0 < offset + vocab; g0 += kNoiseBlock) {
      const int64_t lo = std::max(g0, offset) - offset, hi = std::min(g0 + kNoiseBlock, offset + vocab) - offset;
      const int64_t n = hi - lo, skip = offset + lo - g0;
      const uint32_t quad0 = static_cast<uint32_t>(g0 >> 2);
      if (best_id < 0 || n < kNoiseBlock) {  // the first block (no bound yet) and partial ones: every id
        gumbel_block(quad0, row_key, o.key0, o.key1, gumbel);
        noisy_scores(z + lo, temperature, gumbel + skip, noise, n);
        best_of(noise, n, lo, best, best_id);
        continue;
      }
      // Exact pruning: id v can only win with z_v/T + g_v > best, i.e. g_v > best - z_v/T >= t = best - max_v z_v/T,
      // i.e. u_v > exp(-exp(-t)).  Ids at or below that (less a margin that dwarfs the float rounding of the
      // scores and of log_f32) skip both logarithms; the others are scored exactly as the full pass scores them,
      // in id order, so the winner (first id of the largest score) is the same, bit for bit.
      const double t = static_cast<double>(best) - static_cast<double>(max_of(z + lo, n) / temperature);
      const double margin = 1e-3 * (1.0 + std::fabs(static_cast<double>(best)));
      const double u_floor = std::isnan(t) ? 0.0 : std::exp(-std::exp(-(t - margin)));
      const int64_t count = uniform_candidates(quad0, row_key, o.key0, o.key1, u_floor, uniform, ids);
      for (int64_t k = 0; k < count; ++k) {
        const int64_t v = ids[k];
        const acc_t score = z[lo + v] / temperature + static_cast<acc_t>(uniform_to_gumbel(uniform[v]));
        if (score > best) { best = score; best_id = lo + v; }
      }
    }
  }
  if (exclude) z[gold] = saved_gold;
  res.prediction = best_id < 0 ? 0 : best_id;
  res.best = best;
  if (m == -std::numeric_limits<acc_t>::infinity()) m = 0;  // an all -inf row: e = exp(-inf) = 0, lse = -inf
  acc_t e_gold;
  res.other = exp_apart(z, m, vocab, gold, e_gold);
  res.sum = res.other + e_gold;
  return res;
}

// One row of dz = α·softmax(z) − γ·onehot(gold) − δ/V_all, from e (exp(z − shift) in z[0, V), other = Σ_{v≠gold} e_v,
// sum = other + e_gold), as buf·scale with the returned scale (what the GEMMs fold in on their other side):
//   α ≠ 0: buf = e' with e'[gold] = −other + ((α − γ)/α)·s (α·p_gold − γ = −α·(1 − p_gold) + (α − γ), nothing
//          cancels when p(gold) → 1; α == γ: exactly −other), less δ·s/(α·V_all) everywhere when δ ≠ 0 (the one
//          extra pass, only then); scale α/s.  (A subnormal α whose ratios overflow: dz itself, scale 1.)
//   α == 0: buf = dz itself (−δ/V_all everywhere, −γ − δ/V_all at gold; e is never read: it may be NaN), scale 1.
// gold < 0: the gold id is not among z's (no γ term).  V_all: the whole vocabulary's size (a vocabulary-parallel
// rank's z holds a block of it; there e = exp(z − lse) with the global lse, sum = 1 and other = 1 − p_gold of the
// whole row).  All three 0 is the caller's case (selected out, never 0·e).
template <typename acc_t>
inline acc_t form_row_grad(acc_t* z, int64_t vocab, int64_t gold, acc_t alpha, acc_t gamma, acc_t delta, acc_t other,
                           acc_t sum, int64_t vocab_all) {
  const acc_t per_id = delta / static_cast<acc_t>(vocab_all);
  if (alpha == 0) {
    std::fill(z, z + vocab, -per_id);
    if (gold >= 0) z[gold] = -gamma - per_id;
    return 1;
  }
  const acc_t ratio = (alpha - gamma) / alpha, shift = per_id / alpha;
  if (!std::isfinite(ratio) || !std::isfinite(shift)) {  // α tiny against γ or δ
    const acc_t p_scale = alpha / sum;
    scale_row(z, p_scale, z, vocab);
    if (gold >= 0) z[gold] = -p_scale * other + (alpha - gamma);
    if (delta != 0) add_to_row(z, -per_id, vocab);
    return 1;
  }
  if (gold >= 0) z[gold] = alpha == gamma ? -other : -other + ratio * sum;
  if (delta != 0) add_to_row(z, -shift * sum, vocab);
  return alpha / sum;
}

}  // namespace
}  // namespace tnops
