"""Building blocks shared by the fused-head kernels (``mlm_head_kernels.py``) and the SR backward
(``sr_kernels.py``): index checks, the Gumbel noise tile, the logit tile, ``log1p`` without ``log``, embedding rows.

Index checks ("clamp and flag"): every index a kernel dereferences is checked there, since under
``torch.compile`` nothing checks it before: labels, the row permutation, row ids, CSR offsets and synonym ids,
predictions.  An out-of-range index is masked or clamped so no load or store leaves its buffer, and the flag
of its kind (slot ``BAD_*`` of the call's int32 flags) is set; the launcher raises from the flags afterwards.
"""
from __future__ import annotations

import triton
import triton.language as tl

from tnops import random as tn_random

# Kernels may only read globals wrapped as constexpr.
UNIFORM_SCALE = tl.constexpr(tn_random.UNIFORM_SCALE)
U_MIN = tl.constexpr(tn_random.U_MIN)
U_MAX = tl.constexpr(tn_random.U_MAX)
ROW_ID_LIMIT = tl.constexpr(2**32)  # row ids key one 32-bit Philox counter word
# Slots of the int32 error flags, one per argument kind (their messages: mlm_head._messages).
BAD_LABELS, BAD_ROW_IDS, BAD_ORDER = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
BAD_OFFSETS, BAD_SYN_IDS, BAD_PREDICTIONS = tl.constexpr(3), tl.constexpr(4), tl.constexpr(5)
NUM_FLAGS = 6


@triton.jit
def _flag(flags_ptr, bad, SLOT: tl.constexpr):
    """Set flag ``SLOT`` to 1 where ``bad`` holds: a masked store (every writer writes the same 1), no memory
    traffic when all is well."""
    tl.store(flags_ptr + SLOT + bad.to(tl.int32) * 0, 1, mask=bad)


@triton.jit
def _check_ids(flags_ptr, ids, checked, limit, SLOT: tl.constexpr):
    """``checked`` rows whose ``ids`` lie in ``[0, limit)``; the others set flag ``SLOT``."""
    bad = checked & ((ids < 0) | (ids >= limit))
    _flag(flags_ptr, bad, SLOT)
    return checked & ~bad


@triton.jit
def _block_rows(order_ptr, slots, N, flags_ptr):
    """Rows ``order[slots]`` of a row block and which are valid (a row id outside ``[0, N)`` is flagged)."""
    row_ok = slots < N
    rows = tl.load(order_ptr + slots, mask=row_ok, other=0)
    row_ok = _check_ids(flags_ptr, rows, row_ok, N, BAD_ORDER)
    return tl.where(row_ok, rows, 0), row_ok


@triton.jit
def _gumbel_tile(seed, rows, v0, BLOCK_V: tl.constexpr):
    """Gumbel noise ``[BLOCK_N, BLOCK_V]`` for ``rows`` × ids ``v0 + arange(BLOCK_V)`` (v0 a multiple of 4).

    One Philox call at offset ``(row << 32) | (id >> 2)`` yields the four words of ids ``4q .. 4q+3``.
    """
    quads = (v0 // 4) + tl.arange(0, BLOCK_V // 4)
    offset = (rows.to(tl.int64)[:, None] << 32) | quads.to(tl.int64)[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, offset)
    return _words_to_gumbel(tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3)))


@triton.jit
def _gumbel_tile_at(seed, rows, g0, BLOCK_V: tl.constexpr):
    """``_gumbel_tile``'s noise for ids ``g0 + arange(BLOCK_V)`` with ``g0`` any id (a vocabulary block may start
    anywhere): one Philox call per id, at its quad, keeping the id's lane of the four words (4× the Philox work)."""
    ids = g0 + tl.arange(0, BLOCK_V)
    offset = (rows.to(tl.int64)[:, None] << 32) | (ids // 4).to(tl.int64)[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, offset)
    lane = (ids % 4)[None, :]
    return _words_to_gumbel(tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3))))


@triton.jit
def _words_to_gumbel(words):
    """Philox words to Gumbel noise ``-log(-log u)``, as ``tnops.random`` maps them."""
    x = words.to(tl.int32, bitcast=True)
    x = tl.where(x < 0, ~x, x)
    u = x.to(tl.float32) * UNIFORM_SCALE
    u = tl.minimum(tl.maximum(u, U_MIN), U_MAX)
    return -tl.log(-tl.log(u))


@triton.jit
def _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, E, stride_hn, stride_he, stride_wv, stride_we,
                HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                BLOCK_E: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """fp32 logits ``[BLOCK_N, BLOCK_V]`` of ``rows`` × ``cols``: a K-loop of ``h @ wᵀ`` plus bias, or, without
    a weight, the tile of the given logits ``h [N, V]`` (strides ``stride_hn``, ``stride_he``).

    Offsets are int64 on both axes: ``V · E`` passes 2^31 for LLM-sized heads (256k × 8192), along the rows
    of a row-major weight or along the columns of a transposed one.  ``b_ptr``: a contiguous ``[V]``.
    """
    if HAS_WEIGHT:
        acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
        h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_hn
        w_rows = w_ptr + cols.to(tl.int64)[:, None] * stride_wv
        for e0 in range(0, E, BLOCK_E):
            ks = e0 + tl.arange(0, BLOCK_E)
            k_ok = ks < E
            h = tl.load(h_rows + ks.to(tl.int64)[None, :] * stride_he, mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0)
            w = tl.load(w_rows + ks.to(tl.int64)[None, :] * stride_we, mask=col_ok[:, None] & k_ok[None, :],
                        other=0.0)
            acc = tl.dot(h, tl.trans(w), acc, input_precision=DOT_PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    else:
        acc = tl.load(h_ptr + rows.to(tl.int64)[:, None] * stride_hn + cols.to(tl.int64)[None, :] * stride_he,
                      mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    return acc



@triton.jit
def _embedding_rows(emb_ptr, gold, pred, active, ks, E, stride_ev, stride_ee):
    """fp32 columns ``ks`` of the embedding rows of gold (a) and prediction (b), ``[BLOCK_N, BLOCK_E]``, and
    their mask."""
    m2 = active[:, None] & (ks < E)[None, :]
    cols = ks.to(tl.int64)[None, :] * stride_ee
    a = tl.load(emb_ptr + gold.to(tl.int64)[:, None] * stride_ev + cols, mask=m2, other=0.0)
    b = tl.load(emb_ptr + pred.to(tl.int64)[:, None] * stride_ev + cols, mask=m2, other=0.0)
    return a.to(tl.float32), b.to(tl.float32), m2


@triton.jit
def _log1p_below_one(x):
    """``log(1 + x)`` for ``0 <= x < 1`` to fp32 rounding, from no ``log`` at all (a GPU's fast ``log`` has an
    absolute, not relative, error near 1): ``2 atanh(t)``, ``t = x / (2 + x) < 1/3``, its series to ``t¹⁷``
    (what is left is below ``t¹⁸ / 19 < 2e-10`` relative)."""
    t = x / (2.0 + x)
    s = t * t
    poly = 1.0 / 17.0
    poly = poly * s + 1.0 / 15.0
    poly = poly * s + 1.0 / 13.0
    poly = poly * s + 1.0 / 11.0
    poly = poly * s + 1.0 / 9.0
    poly = poly * s + 1.0 / 7.0
    poly = poly * s + 1.0 / 5.0
    poly = poly * s + 1.0 / 3.0
    poly = poly * s + 1.0
    return 2.0 * t * poly
