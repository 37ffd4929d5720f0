// gumbel_noise(seed, rows, start, stop): Philox4x32-10 Gumbel noise for CPU tensors (philox.h), the stream of
// tnops/random.py bit for bit.  One Philox call fills four neighbouring vocabulary ids.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "philox.h"

namespace {

using tnops::philox4x32_10;
using tnops::word_to_gumbel;

// gumbel_noise(seed, rows [R] int64, start, stop) -> float32 [R, stop - start]
at::Tensor gumbel_noise(int64_t seed, const at::Tensor& rows, int64_t start, int64_t stop) {
  TORCH_CHECK(rows.device().is_cpu() && rows.scalar_type() == at::kLong && rows.dim() == 1,
              "rows: expected a 1-D int64 CPU tensor");
  TORCH_CHECK(0 <= start && start <= stop, "expected 0 <= start <= stop, got ", start, ", ", stop);
  const auto rows_c = rows.contiguous();
  const int64_t n_rows = rows_c.size(0), width = stop - start;
  auto out = at::empty({n_rows, width}, at::kFloat);
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

TORCH_LIBRARY_IMPL(tnops, CPU, m) {
  m.impl("gumbel_noise", &gumbel_noise);
}
