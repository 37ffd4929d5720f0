// Philox4x32-10 Gumbel noise for CPU tensors: the counter-based stream of tnops/random.py, bit for bit.
//
// Cell (row, v) uses counter (v >> 2, row, 0, 0), key (seed_lo, seed_hi) and output word v & 3, mapped
// to a float as Triton's tl.rand does ((x < 0 ? ~x : x) * 4.6566127342e-10 on the int32 view), clamped to
// [2^-24, 1 - 2^-24], then g = -log(-log(u)).  One Philox call fills four neighbouring vocabulary ids.
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
constexpr float kScale = 4.6566127342e-10f;
constexpr float kUMin = 5.9604644775390625e-08f;    // 2^-24
constexpr float kUMax = 0.99999994039535522461f;    // 1 - 2^-24

inline void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t pb = static_cast<uint64_t>(kRoundB) * c[2];
    const uint64_t pa = static_cast<uint64_t>(kRoundA) * c[0];
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c[1] ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = static_cast<uint32_t>(pb);
    c[2] = n2;
    c[3] = static_cast<uint32_t>(pa);
    k0 += kKeyA;
    k1 += kKeyB;
  }
}

inline float word_to_gumbel(uint32_t word) {
  int32_t x = static_cast<int32_t>(word);
  x = x < 0 ? ~x : x;
  float u = static_cast<float>(x) * kScale;
  u = u < kUMin ? kUMin : (u > kUMax ? kUMax : u);
  return -logf(-logf(u));
}

// gumbel_noise(seed, rows [R] int64, start, stop) -> float32 [R, stop - start]
torch::Tensor gumbel_noise(int64_t seed, const torch::Tensor& rows, int64_t start, int64_t stop) {
  TORCH_CHECK(rows.device().is_cpu() && rows.scalar_type() == torch::kLong && rows.dim() == 1,
              "rows: expected a 1-D int64 CPU tensor");
  TORCH_CHECK(0 <= start && start <= stop, "expected 0 <= start <= stop, got ", start, ", ", stop);
  const auto rows_c = rows.contiguous();
  const int64_t n_rows = rows_c.size(0), width = stop - start;
  auto out = torch::empty({n_rows, width}, torch::kFloat32);
  const int64_t* row_ptr = rows_c.data_ptr<int64_t>();
  float* out_ptr = out.data_ptr<float>();
  const uint64_t useed = static_cast<uint64_t>(seed);
  const uint32_t k0 = static_cast<uint32_t>(useed), k1 = static_cast<uint32_t>(useed >> 32);
  const int64_t first_quad = start >> 2, last_quad = (stop + 3) >> 2;
#pragma omp parallel
  {
    // Philox words of one row first, then the float maths in a separate loop the compiler vectorises.
    std::vector<uint32_t> words(static_cast<size_t>(4 * (last_quad - first_quad)));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n_rows; ++r) {
      const uint32_t row_word = static_cast<uint32_t>(row_ptr[r]);
      for (int64_t q = first_quad; q < last_quad; ++q) {
        uint32_t c[4] = {static_cast<uint32_t>(q), row_word, 0u, 0u};
        philox4x32_10(c, k0, k1);
        for (int lane = 0; lane < 4; ++lane) words[4 * (q - first_quad) + lane] = c[lane];
      }
      const uint32_t* src = words.data() + (start - 4 * first_quad);
      float* dst = out_ptr + r * width;
#pragma omp simd
      for (int64_t v = 0; v < width; ++v) dst[v] = word_to_gumbel(src[v]);
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(tnops, m) {
  m.def("gumbel_noise(int seed, Tensor rows, int start, int stop) -> Tensor");
}

TORCH_LIBRARY_IMPL(tnops, CPU, m) {
  m.impl("gumbel_noise", &gumbel_noise);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tnops native CPU kernels (registered as torch.ops.tnops.*)";
}
