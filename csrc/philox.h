// Philox4x32-10 and the Gumbel transform shared by every native kernel: the counter-based stream of
// tnops/random.py and Triton's tl.randint4x, bit for bit.
//
// Cell (row, v) uses counter (v >> 2, row, 0, 0), key (seed_lo, seed_hi) and output word v & 3, mapped to a
// float as Triton's tl.rand does ((x < 0 ? ~x : x) * 4.6566127342e-10 on the int32 view), clamped to
// [2^-24, 1 - 2^-24], then g = -log(-log(u)) with log_f32 below.
//
// log_f32 is evaluated operation for operation like tnops.random.log_f32 (torch tensor ops), so the torch
// path and this extension draw identical samples.  Every step is one correctly rounded float32 operation;
// the build passes -ffp-contract=off so the compiler never fuses a multiply and an add into an FMA.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace tnops {

constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u, kPhiloxKeyB = 0xBB67AE85u;
constexpr uint32_t kPhiloxRoundA = 0xD2511F53u, kPhiloxRoundB = 0xCD9E8D57u;
constexpr float kUniformScale = 4.6566127342e-10f;
constexpr float kUniformMin = 0x1p-24f;
constexpr float kUniformMax = 0x1.fffffep-1f;  // 1 - 2^-24

// Ten Philox4x32 rounds on (c0, c1, c2, c3) with key (k0, k1), in place.  Plain scalar variables and a fully
// unrolled round loop, so a caller's loop over counters vectorises (vpmuludq for the 32x32->64 products).
inline void philox4x32_10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const uint64_t pb = static_cast<uint64_t>(kPhiloxRoundB) * c2;
    const uint64_t pa = static_cast<uint64_t>(kPhiloxRoundA) * c0;
    const uint32_t n0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c0 = n0;
    c1 = static_cast<uint32_t>(pb);
    c2 = n2;
    c3 = static_cast<uint32_t>(pa);
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
}

inline void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) { philox4x32_10(c[0], c[1], c[2], c[3], k0, k1); }

// Cephes' logf scheme for positive normal x: x = m·2^e, m in [√½, √2), f = m - 1 (exact),
// log x = f - f²/2 + f³·P(f) + e·ln2 with ln2 split into a 9-bit head (e·head exact) and a tail.
inline float log_f32(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const int32_t exponent = (bits >> 23) - 126;
  const int32_t mantissa_bits = (bits & 0x007FFFFF) | 0x3F000000;
  float m;
  std::memcpy(&m, &mantissa_bits, sizeof m);
  const int32_t low = m < 0x1.6a09e6p-1f ? 1 : 0;  // √½; selects written as arithmetic so loops vectorise
  m = m * static_cast<float>(1 + low);             // m + m when low: exact either way
  const float e = static_cast<float>(exponent - low);
  const float f = m - 1.0f;
  const float z = f * f;
  float y = 0x1.204376p-4f;
  y = y * f + -0x1.d7a370p-4f;
  y = y * f + 0x1.de4a34p-4f;
  y = y * f + -0x1.fcba9ep-4f;
  y = y * f + 0x1.23d37ep-3f;
  y = y * f + -0x1.555ca0p-3f;
  y = y * f + 0x1.999d58p-3f;
  y = y * f + -0x1.fffff8p-3f;
  y = y * f + 0x1.555554p-2f;
  y = (y * f) * z;
  y = y + e * -0x1.bd0106p-13f;
  y = y - z * 0.5f;
  return (f + y) + e * 0x1.63p-1f;
}

inline float word_to_uniform(uint32_t word) {
  int32_t x = static_cast<int32_t>(word);
  x = x ^ (x >> 31);  // x < 0 ? ~x : x
  const float u = static_cast<float>(x) * kUniformScale;
  return std::min(std::max(u, kUniformMin), kUniformMax);
}

inline float uniform_to_gumbel(float u) { return -log_f32(-log_f32(u)); }

inline float word_to_gumbel(uint32_t word) { return uniform_to_gumbel(word_to_uniform(word)); }

}  // namespace tnops
