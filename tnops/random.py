"""Counter-based random numbers shared by every backend.

The Gumbel noise of a (row, vocab id) cell is a pure function of ``(seed, row, vocab id)``, so samples do
not depend on tile sizes, chunking or launch shape, and the torch, native and Triton paths draw the same
numbers.  The generator is Philox4x32-10 exactly as Triton's ``tl.randint4x`` computes it
(key = seed as (lo, hi) 32-bit words; counter = (offset_lo, offset_hi, 0, 0)), with

    counter = (vocab_id // 4, row, 0, 0)      and output word ``vocab_id % 4``,

i.e. the offset passed to ``tl.randint4x`` is ``(row << 32) | (vocab_id >> 2)`` and one Philox call
serves four neighbouring vocabulary ids.  Words become floats as ``tl.rand`` does
(``(x < 0 ? ~x : x) * 4.6566127342e-10`` on the int32 view), then are clamped into ``[2^-24, 1 - 2^-24]``
because that mapping can return exactly 0 and 1 (``-log(-log u)`` would be ±inf).
"""
from __future__ import annotations

import torch

PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_ROUNDS = 10
_MASK32 = 0xFFFFFFFF
UNIFORM_SCALE = 4.6566127342e-10
U_MIN = 2.0**-24
U_MAX = 1.0 - 2.0**-24


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # int64 products of two 32-bit words wrap modulo 2^64, which keeps both halves exact.
    p = b * a
    return (p >> 32) & _MASK32, p & _MASK32


def philox4x32(seed: int, c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor | None = None,
               c3: torch.Tensor | None = None, rounds: int = PHILOX_ROUNDS) -> tuple[torch.Tensor, ...]:
    """Philox4x32 on int64 tensors holding 32-bit words.

    Args:
        seed: 64-bit seed; key = (seed & 0xffffffff, seed >> 32), as Triton splits it.
        c0, c1, c2, c3: counter words, int64 tensors of one broadcastable shape ``[*]`` (c2, c3 default 0).
    Returns:
        Four int64 tensors ``[*]`` with values in ``[0, 2^32)``.
    """
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0, c1 = torch.broadcast_tensors(c0.long() & _MASK32, c1.long() & _MASK32)
    c2 = torch.zeros_like(c0) if c2 is None else (c2.long() & _MASK32).expand_as(c0)
    c3 = torch.zeros_like(c0) if c3 is None else (c3.long() & _MASK32).expand_as(c0)
    for _ in range(rounds):
        hi_b, lo_b = _mul_hi_lo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & _MASK32
        k1 = (k1 + PHILOX_KEY_B) & _MASK32
    return c0, c1, c2, c3


def words_to_uniform(words: torch.Tensor) -> torch.Tensor:
    """Map 32-bit words (int64 ``[*]``) to float32 ``[*]`` in ``[2^-24, 1-2^-24]`` the way ``tl.rand`` does, then "
      "clamp."""
    as_int32 = torch.where(words >= 2**31, words - 2**32, words)
    folded = torch.where(as_int32 < 0, -as_int32 - 1, as_int32)
    u = folded.to(torch.float32) * torch.tensor(UNIFORM_SCALE, dtype=torch.float32)
    return u.clamp_(U_MIN, U_MAX)


# log(x) of positive normal float32 x from IEEE-exact operations only (exponent split, +, -, *), in one fixed
# order.  torch.log (SLEEF, vectorised) and C's logf disagree in the last bit for some inputs, which flips
# samples at near-ties between the torch path and the C++ extension; this function is evaluated operation
# for operation the same way by both (csrc/philox.h ``log_f32``, compiled with -ffp-contract=off), so CPU
# samples never depend on the build.  It is Cephes' logf scheme: x = m·2^e with m in [√½, √2), f = m - 1
# (exact), log x = f - f²/2 + f³·P(f) + e·ln2, ln2 split in a 9-bit head (e·head exact) and a tail.
# Measured error: ≤ 1 ulp against float64's log over 2^24 inputs (tests/test_random.py).
LOG_POLY = tuple(float.fromhex(h) for h in (
    "0x1.204376p-4", "-0x1.d7a370p-4", "0x1.de4a34p-4", "-0x1.fcba9ep-4", "0x1.23d37ep-3", "-0x1.555ca0p-3",
    "0x1.999d58p-3", "-0x1.fffff8p-3", "0x1.555554p-2"))
LN2_HEAD = float.fromhex("0x1.63p-1")       # 0.693359375
LN2_TAIL = float.fromhex("-0x1.bd0106p-13")  # ln 2 - LN2_HEAD, rounded to float32
SQRT_HALF = float.fromhex("0x1.6a09e6p-1")


def log_f32(x: torch.Tensor) -> torch.Tensor:
    """Natural log of positive normal float32 ``x [*]``, bit-identical to the C++ extension's ``log_f32``.

    Every step is one correctly rounded float32 operation (Python constants are exact float32 values, so
    torch's scalar promotion cannot change a result).
    """
    bits = x.view(torch.int32)
    exponent = (bits >> 23) - 126                                    # x = m · 2^exponent, m in [0.5, 1)
    mantissa = ((bits & 0x007FFFFF) | 0x3F000000).view(torch.float32)
    low = mantissa < SQRT_HALF
    mantissa = torch.where(low, mantissa + mantissa, mantissa)      # m in [√½, √2)
    e = (exponent - low.to(torch.int32)).to(torch.float32)
    f = mantissa - 1.0                                               # exact (Sterbenz)
    z = f * f
    y = torch.full_like(f, LOG_POLY[0])
    for coefficient in LOG_POLY[1:]:
        y = y * f + coefficient
    y = (y * f) * z
    y = y + e * LN2_TAIL
    y = y - z * 0.5
    return (f + y) + e * LN2_HEAD


def uniform(seed: int, rows: torch.Tensor, vocab_ids: torch.Tensor) -> torch.Tensor:
    """Uniform numbers of the cells ``(rows[i], vocab_ids[j])``.

    Args:
        seed: the sampling seed.
        rows: int64 ``[R]`` global row indices.
        vocab_ids: int64 ``[C]`` vocabulary ids.
    Returns:
        float32 ``[R, C]`` on ``rows.device``.
    """
    block = vocab_ids >> 2
    words = philox4x32(seed, block[None, :], rows[:, None])
    lane = (vocab_ids & 3)[None, :].expand(rows.numel(), -1)
    picked = torch.stack(words, dim=-1).gather(-1, lane.unsqueeze(-1)).squeeze(-1)
    return words_to_uniform(picked)


def native_gumbel():
    """``torch.ops.tnops.gumbel_noise`` from the compiled extension (csrc/philox.cpp), or None when it is not
    loaded.  The extension comes from ``tnops._native_loader``, the one loader (``TNOPS_NATIVE=auto|jit|off``)."""
    global _NATIVE
    if _NATIVE is None:
        from tnops import _native_loader

        _NATIVE = torch.ops.tnops.gumbel_noise if _native_loader.load() is None else False
    return _NATIVE or None


_NATIVE = None


def gumbel(seed: int, rows: torch.Tensor, vocab_size: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Gumbel noise ``g = -log(-log u)`` (``log_f32``) for ``rows`` × vocabulary ids ``[start, stop)``.

    Args:
        seed: the sampling seed.
        rows: int64 ``[R]`` global row indices.
        vocab_size: V, used when ``stop`` is None.
    Returns:
        float32 ``[R, stop - start]``.
    """
    stop = vocab_size if stop is None else stop
    native = native_gumbel() if rows.device.type == "cpu" else None
    if native is not None:  # same stream, ~20x faster than the tensor ops below on CPU
        seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        return native(seed - 2**64 if seed >= 2**63 else seed, rows.long(), start, stop)
    if stop - start >= 4:
        # Generate whole Philox blocks once and slice: 4 ids per call instead of one call per id.
        first, last = start >> 2, (stop + 3) >> 2
        words = philox4x32(seed, torch.arange(first, last, device=rows.device)[None, :], rows[:, None])
        u = words_to_uniform(torch.stack(words, dim=-1).reshape(rows.numel(), -1))
        u = u[:, start - 4 * first: stop - 4 * first]
    else:
        u = uniform(seed, rows, torch.arange(start, stop, device=rows.device))
    return -log_f32(-log_f32(u))


SEED_DRAW_HIGH = 2**63 - 1  # seeds drawn for seed=None lie in [0, 2^63 - 1), eager and compiled alike


def draw_seed_tensor(generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh seed as an int64 CPU tensor ``[]`` in ``[0, 2^63 - 1)`` from torch's default (or the given)
    generator: the one rule of ``seed=None``.  Under torch.compile it stays in the graph; inductor may draw it from
    its own generator (README, "Guarantees"), ``aot_eager`` draws what eager draws."""
    return torch.randint(0, SEED_DRAW_HIGH, (), generator=generator, dtype=torch.int64)


def draw_seed(generator: torch.Generator | None = None) -> int:
    """``draw_seed_tensor`` as a Python int; no device synchronisation (a CPU tensor)."""
    return int(draw_seed_tensor(generator))
