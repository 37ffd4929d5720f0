"""Fused LM head + MLM cross-entropy + hard correction + Gumbel-max sampling + SR cosine: the ``@triton.jit``
kernels.  Their launchers (argument preparation, tiles, grids) are in ``mlm_head.py``.

What is fused: ``logits = hidden @ weight.T + bias`` is formed tile by tile in registers and never written
out.  Forward, one tiled pass over the vocabulary keeps per row the running max, the sum-exp of the non-gold
ids, the gold logit and the best (arg)max of ``z`` or of ``z / T + gumbel`` (Philox keyed by (seed, row, vocab
id), shared with ``tnops.random``).  The vocabulary is split over several programs per row block; a small combine kernel
merges the partial rows, looks the prediction up in the CSR synonym table (binary search), writes
the per-row loss, and computes the SR cosine between the embedding rows of gold and prediction.
Confident rows (p(gold) → 1, a trained head) stay exact in fp32: the forward sums ``exp`` over the non-gold ids
apart, so the CE is ``log1p`` of that sum and ``1 - p(gold)`` (the backward's gold entry) a quotient, neither the
difference of near-equal numbers (``lse - z_gold``, ``p - 1``); SR is exactly 0 where the prediction is gold.
Backward recomputes each ``[BLOCK_N, BLOCK_V]`` logit tile, forms ``(softmax - onehot) * coef`` and
accumulates ``dh`` and ``dW`` with relaxed fp32 atomics (``red.global``).  Rows are visited through a
permutation that puts masked rows first (in backward: rows with a gradient), so ignored and corrected rows,
wherever they sit in the batch, fill whole row blocks that exit at once and cost no work.  Extra memory is
O(N · splits + V): partial rows, the permutation, plus fp32 gradient accumulators.

Given logits (``mlm_loss``, ``HAS_WEIGHT=False``): the same kernels read each logit tile from the ``[N, V]``
logits through their strides instead of forming it by ``tl.dot``, and backward writes ``dz`` straight into
``d_logits`` (every element, zeros included: no memset).

Index checks ("clamp and flag"): every index a kernel dereferences is checked there, since under
``torch.compile`` nothing checks it before: labels, the row permutation, row ids, CSR offsets and synonym ids,
predictions.  An out-of-range index is masked or clamped so no load or store leaves its buffer, and the flag
of its kind (slot ``BAD_*`` of the call's int32 flags) is set; the launcher raises from the flags afterwards.

Limits: fp32 uses IEEE dots (no TF32) so gradients match the reference to ~1e-6; half inputs use
tensor-core dots with fp32 accumulation; float64 is not served (the torch backend is).  Under the
interpreter (TRITON_INTERPRET=1) the launchers accept fp32 only: its bf16 ``tl.dot`` is broken upstream
(triton-lang/triton#11584).  Inputs of any strides are read correctly (see ``mlm_head.py``).
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
    words = tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3))
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
def _mlm_fwd_kernel(h_ptr, w_ptr, b_ptr, labels_ptr, order_ptr, row_ids_ptr,
                    part_max_ptr, part_other_ptr, part_gold_ptr, part_best_ptr, part_idx_ptr, tiles_ptr, flags_ptr,
                    N, V, E, stride_hn, stride_he, stride_wv, stride_we,
                    seed, temperature, ignore_index, v_per_split,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, SAMPLE: tl.constexpr, DISALLOW: tl.constexpr,
                    HAS_ROW_IDS: tl.constexpr, COUNT_TILES: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_V: tl.constexpr, BLOCK_E: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Partial statistics of row block ``pid_n`` over vocabulary slice ``split``.

    The block's rows are ``order[pid_n·BLOCK_N : (pid_n+1)·BLOCK_N]``: the launcher puts masked rows first,
    so unmasked rows, wherever they sit in the batch, fill whole blocks that return at once.
    Writes ``[split, row]`` entries: ``max_v z``, ``Σ_{v != gold} exp(z_v - max)`` (the gold term is left out, so
    ``1 - p(gold)`` never comes from a subtraction; the combine adds it back from ``z[gold]``), ``z[gold]`` (0 if
    gold is outside the slice), the best score (``z`` or ``z / T + g``, gold excluded under DISALLOW) and its id
    (lowest on ties).
    ``COUNT_TILES`` (tests): add 1 to ``tiles_ptr`` per program that does any work.  Flags: rows of ``order``
    outside ``[0, N)``, masked labels outside ``[0, V)``, row ids outside ``[0, 2^32)`` (those rows are skipped).
    """
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    rows, row_ok = _block_rows(order_ptr, pid_n * BLOCK_N + tl.arange(0, BLOCK_N), N, flags_ptr)
    gold = tl.load(labels_ptr + rows, mask=row_ok, other=ignore_index)
    active = _check_ids(flags_ptr, gold, row_ok & (gold != ignore_index), V, BAD_LABELS)
    run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    run_other = tl.zeros((BLOCK_N,), tl.float32)
    gold_logit = tl.zeros((BLOCK_N,), tl.float32)
    best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int32)
    row_keys = rows
    if HAS_ROW_IDS:  # caller-given Philox row keys, e.g. global positions in a data-parallel batch
        row_keys = tl.load(row_ids_ptr + rows, mask=row_ok, other=0)
        key_ok = _check_ids(flags_ptr, row_keys, row_ok, ROW_ID_LIMIT, BAD_ROW_IDS)
        active = active & key_ok
        row_keys = tl.where(key_ok, row_keys, 0)
    v_start = split * v_per_split
    v_stop = tl.minimum(V, v_start + v_per_split)
    if tl.max(active.to(tl.int32), axis=0) > 0:  # row blocks with nothing masked cost nothing
        if COUNT_TILES:
            tl.atomic_add(tiles_ptr, 1)
        for v0 in range(v_start, v_stop, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            col_ok = cols < v_stop
            z = _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, active, col_ok, E, stride_hn, stride_he,
                            stride_wv, stride_we, HAS_WEIGHT, HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_E, DOT_PRECISION)
            z = tl.where(col_ok[None, :], z, float("-inf"))
            new_max = tl.maximum(run_max, tl.max(z, axis=1))
            # a row whose logits so far are all -inf (masked vocabulary) adds 0, not exp(-inf + inf) = NaN
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            is_gold = cols[None, :] == gold[:, None]
            gold_logit += tl.sum(tl.where(is_gold, z, 0.0), axis=1)
            z_other = tl.where(is_gold, float("-inf"), z)  # the non-gold logits: their sum-exp, DISALLOW's scores
            run_other = run_other * tl.exp(run_max - shift) + tl.sum(tl.exp(z_other - shift[:, None]), axis=1)
            run_max = new_max
            score = z_other if DISALLOW else z
            if SAMPLE:  # -inf / T + g is -inf: the gold id stays out under DISALLOW
                score = tl.div_rn(score, temperature) + _gumbel_tile(seed, row_keys, v0, BLOCK_V)
                score = tl.where(col_ok[None, :], score, float("-inf"))
            tile_best = tl.max(score, axis=1)
            tile_idx = tl.argmax(score, axis=1, tie_break_left=True).to(tl.int32) + v0
            better = tile_best > best
            best = tl.where(better, tile_best, best)
            best_idx = tl.where(better, tile_idx, best_idx)
    out = split * N + rows
    tl.store(part_max_ptr + out, run_max, mask=row_ok)
    tl.store(part_other_ptr + out, run_other, mask=row_ok)
    tl.store(part_gold_ptr + out, gold_logit, mask=row_ok)
    tl.store(part_best_ptr + out, best, mask=row_ok)
    tl.store(part_idx_ptr + out, best_idx, mask=row_ok)


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


@triton.jit
def _mlm_combine_kernel(part_max_ptr, part_other_ptr, part_gold_ptr, part_best_ptr, part_idx_ptr,
                        labels_ptr, offsets_ptr, syn_ids_ptr, emb_ptr, lse_ptr, loss_ptr, complement_ptr, pred_ptr,
                        corrected_ptr, sr_ptr, sr_dot_ptr, sr_gold_sq_ptr, sr_pred_sq_ptr, flags_ptr, N, V, NNZ,
                        SPLITS, E_SR, stride_ev, stride_ee, ignore_index, cos_eps_sq,
                        HAS_TABLE: tl.constexpr, SEARCH_STEPS: tl.constexpr, HAS_SR: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
    """Merge the partial rows; prediction, hard correction (CSR binary search), CE per row, SR cosine.

    ``lse = M + log(other + exp(z_gold - M))`` with ``other = Σ_s other_s · exp(max_s - M)``, the non-gold sum;
    the best over splits is taken in split order with a strict ``>`` so ties keep the lowest id.  A row is
    corrected when ``pred != gold`` and ``pred`` is in ``syn_ids[offsets[gold] : offsets[gold + 1]]`` (sorted).
    SR: ``1 - dot / sqrt(max(|a|²|b|², eps²))``, exactly 0 when ``pred == gold``.

    Confident rows (p(gold) → 1, CE far below fp32's epsilon relative to lse): ``complement = other / total
    = 1 - p(gold)`` (no subtraction; the backward's gold entry) and, where ``p(gold) > 1/2`` (then gold is the
    row max and ``x = other · exp(M - z_gold) < 1``), ``CE = log1p(x)`` instead of ``lse - z_gold``.
    Flags: masked labels outside ``[0, V)``; a CSR row outside ``0 <= offsets[g] <= offsets[g + 1] <= NNZ``
    (searched as empty); synonym ids met by the search outside ``[0, V)``.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    gold = tl.load(labels_ptr + rows, mask=row_ok, other=ignore_index)
    active = _check_ids(flags_ptr, gold, row_ok & (gold != ignore_index), V, BAD_LABELS)
    run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    for s in range(SPLITS):
        run_max = tl.maximum(run_max, tl.load(part_max_ptr + s * N + rows, mask=row_ok, other=float("-inf")))
    safe_max = tl.where(run_max == float("-inf"), 0.0, run_max)
    other = tl.zeros((BLOCK_N,), tl.float32)
    gold_logit = tl.zeros((BLOCK_N,), tl.float32)
    best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int32)
    for s in range(SPLITS):
        part = s * N + rows
        m = tl.load(part_max_ptr + part, mask=row_ok, other=float("-inf"))
        other += tl.load(part_other_ptr + part, mask=row_ok, other=0.0) * tl.exp(m - safe_max)
        gold_logit += tl.load(part_gold_ptr + part, mask=row_ok, other=0.0)
        b = tl.load(part_best_ptr + part, mask=row_ok, other=float("-inf"))
        i = tl.load(part_idx_ptr + part, mask=row_ok, other=0)
        better = b > best
        best = tl.where(better, b, best)
        best_idx = tl.where(better, i, best_idx)
    total = other + tl.exp(gold_logit - safe_max)  # gold lies in one split: its part_gold is z_gold, the others 0
    lse = safe_max + tl.log(tl.where(active, total, 1.0))
    # the forward kernel's ids lie in [0, V); clamped all the same, as a row it skipped has none
    pred = tl.minimum(tl.maximum(tl.where(active, best_idx, 0), 0), V - 1)
    safe_gold = tl.where(active, gold, 0)
    corrected = tl.zeros((BLOCK_N,), tl.int1)
    if HAS_TABLE:
        lo = tl.load(offsets_ptr + safe_gold, mask=active, other=0)
        end = tl.load(offsets_ptr + safe_gold + 1, mask=active, other=0)
        bad_row = active & ((lo < 0) | (lo > end) | (end > NNZ))
        _flag(flags_ptr, bad_row, BAD_OFFSETS)
        lo = tl.where(bad_row, 0, lo)  # a bad row is searched as empty: every position read is in [0, NNZ)
        end = tl.where(bad_row, 0, end)
        hi = end
        bad_id = tl.zeros((BLOCK_N,), tl.int1)
        for _ in range(SEARCH_STEPS):  # lower_bound of pred in the sorted row
            searching = lo < hi
            mid = (lo + hi) // 2
            value = tl.load(syn_ids_ptr + mid, mask=active & searching, other=0)
            bad_id = bad_id | (active & searching & ((value < 0) | (value >= V)))
            go_right = searching & (value < pred)
            lo = tl.where(go_right, mid + 1, lo)
            hi = tl.where(searching & ~go_right, mid, hi)
        _flag(flags_ptr, bad_id, BAD_SYN_IDS)
        found = tl.load(syn_ids_ptr + lo, mask=active & (lo < end), other=-1) == pred
        corrected = active & (pred != gold) & found
    kept = active & ~corrected
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    confident = other + other < total  # p(gold) > 1/2: gold is the row max, x < 1
    x = other * tl.exp(tl.where(confident, safe_max - gold_logit, 0.0))
    ce = tl.where(confident, _log1p_below_one(x), lse - gold_logit)
    tl.store(loss_ptr + rows, tl.where(kept, ce, 0.0), mask=row_ok)
    tl.store(complement_ptr + rows, tl.where(active, other / tl.where(active, total, 1.0), 0.0), mask=row_ok)
    tl.store(pred_ptr + rows, tl.where(active, pred, ignore_index).to(tl.int64), mask=row_ok)
    tl.store(corrected_ptr + rows, corrected.to(tl.int8), mask=row_ok)
    if HAS_SR:
        dot = tl.zeros((BLOCK_N,), tl.float32)
        gold_sq = tl.zeros((BLOCK_N,), tl.float32)
        pred_sq = tl.zeros((BLOCK_N,), tl.float32)
        for e0 in range(0, E_SR, BLOCK_E):
            ks = e0 + tl.arange(0, BLOCK_E)
            a, b, _unused_mask = _embedding_rows(emb_ptr, safe_gold, pred, active, ks, E_SR, stride_ev, stride_ee)
            dot += tl.sum(a * b, axis=1)
            gold_sq += tl.sum(a * a, axis=1)
            pred_sq += tl.sum(b * b, axis=1)
        inv_norm = 1.0 / tl.sqrt_rn(tl.maximum(gold_sq * pred_sq, cos_eps_sq))
        # pred == gold: 1 - cos(e, e) is 0 exactly (fp32 rounding would leave ~1e-7)
        tl.store(sr_ptr + rows, tl.where(active & (pred != gold), 1.0 - dot * inv_norm, 0.0), mask=row_ok)
        tl.store(sr_dot_ptr + rows, dot, mask=row_ok)
        tl.store(sr_gold_sq_ptr + rows, gold_sq, mask=row_ok)
        tl.store(sr_pred_sq_ptr + rows, pred_sq, mask=row_ok)


@triton.jit
def _dz_tile(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, complement_ptr, flags_ptr, rows, live, coef, cols, col_ok, V,
             E, stride_hn, stride_he, stride_wv, stride_we, ignore_index, HAS_WEIGHT: tl.constexpr,
             HAS_BIAS: tl.constexpr, HAS_COMPLEMENT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
             BLOCK_E: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``(dz, live)``: the fp32 ``[BLOCK_N, BLOCK_V]`` tile of ``(softmax - onehot(gold)) · coef`` (0 off ``live``),
    and ``live`` less the rows whose label is ``ignore_index`` or out of ``[0, V)`` (flagged).

    ``HAS_COMPLEMENT``: the gold entry is ``-complement · coef`` with the forward's ``complement = 1 - p(gold)``
    (summed over the other ids, exact when p(gold) → 1, where ``exp(z_gold - lse) - 1`` cancels to 0)."""
    gold = tl.load(labels_ptr + rows, mask=live, other=ignore_index)
    live = _check_ids(flags_ptr, gold, live & (gold != ignore_index), V, BAD_LABELS)
    lse = tl.load(lse_ptr + rows, mask=live, other=0.0)
    z = _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, live, col_ok, E, stride_hn, stride_he,
                    stride_wv, stride_we, HAS_WEIGHT, HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_E, DOT_PRECISION)
    p = tl.exp(z - lse[:, None])
    is_gold = cols[None, :] == gold[:, None]
    if HAS_COMPLEMENT:
        complement = tl.load(complement_ptr + rows, mask=live, other=0.0)
        dz = tl.where(is_gold, -complement[:, None], p) * coef[:, None]
    else:
        dz = (p - is_gold.to(tl.float32)) * coef[:, None]
    return tl.where(live[:, None] & col_ok[None, :], dz, 0.0), live


@triton.jit
def _mlm_bwd_kernel(h_ptr, w_ptr, b_ptr, labels_ptr, order_ptr, lse_ptr, complement_ptr, coef_ptr, dh_ptr, dw_ptr,
                    db_ptr, tiles_ptr, flags_ptr, N, V, E, stride_hn, stride_he, stride_wv, stride_we, ignore_index,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_COMPLEMENT: tl.constexpr,
                    WANT_DH: tl.constexpr, WANT_DW: tl.constexpr, WANT_DB: tl.constexpr, COUNT_TILES: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_E: tl.constexpr, GROUP_N: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    """Gradient of ``Σ_rows coef · (lse - z_gold)`` for one ``[BLOCK_N, BLOCK_V]`` tile.

    ``dz = (exp(z - lse) - onehot(gold)) · coef`` (gold entry ``-complement · coef``: see ``_dz_tile``);
    ``dh += dz @ W[tile]``, ``dW[tile] += dzᵀ @ h``,
    ``db[tile] += Σ_rows dz``, all fp32 atomics.  ``coef`` is 0 on ignored and corrected rows; the rows of
    a block are ``order[...]`` with the ``coef != 0`` rows first, so such rows fill whole blocks, and a tile
    whose rows all have ``coef == 0`` returns before touching memory (``COUNT_TILES``: as in the forward).
    Without a weight (given logits ``h [N, V]``), ``dz`` itself is the gradient: stored into ``dh_ptr``
    (``[N, V]``, contiguous, the logits' dtype), every element of the tile, zeros on rows without a gradient.
    Rows labelled ``ignore_index`` get no gradient; other labels outside ``[0, V)`` are flagged.

    Programs are numbered in groups of ``GROUP_N`` row blocks × all vocabulary tiles, so the programs
    resident at one time add into ~GROUP_N row blocks of ``dh`` and a band of ``dW`` tiles: neither
    accumulator is hit by every resident program at once (as with a plain row-major grid), and the
    ``h``/``W`` tiles they read stay in L2.
    """
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_v = tl.cdiv(V, BLOCK_V)
    group_size = GROUP_N * num_pid_v
    first_n = (pid // group_size) * GROUP_N
    group_rows = tl.minimum(num_pid_n - first_n, GROUP_N)
    pid_n = first_n + (pid % group_size) % group_rows
    pid_v = (pid % group_size) // group_rows
    rows, row_ok = _block_rows(order_ptr, pid_n * BLOCK_N + tl.arange(0, BLOCK_N), N, flags_ptr)
    coef = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    live = row_ok & (coef != 0.0)
    if not HAS_WEIGHT:  # WANT_DH: the launcher runs this variant only for d_logits
        cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        dz, live = _dz_tile(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, complement_ptr, flags_ptr, rows, live, coef,
                            cols, col_ok, V, E, stride_hn, stride_he, stride_wv, stride_we, ignore_index, HAS_WEIGHT,
                            HAS_BIAS, HAS_COMPLEMENT, BLOCK_N, BLOCK_V, BLOCK_E, DOT_PRECISION)
        tl.store(dh_ptr + rows.to(tl.int64)[:, None] * V + cols[None, :], dz.to(dh_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])
    else:
        if tl.max(live.to(tl.int32), axis=0) > 0:
            if COUNT_TILES:
                tl.atomic_add(tiles_ptr, 1)
            cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            dz, live = _dz_tile(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, complement_ptr, flags_ptr, rows, live,
                                coef, cols, col_ok, V, E, stride_hn, stride_he, stride_wv, stride_we, ignore_index,
                                HAS_WEIGHT, HAS_BIAS, HAS_COMPLEMENT, BLOCK_N, BLOCK_V, BLOCK_E, DOT_PRECISION)
            if WANT_DB:
                # relaxed: plain fire-and-forget reductions (red.global); the default acq_rel would fence each one
                tl.atomic_add(db_ptr + cols, tl.sum(dz, axis=0), mask=col_ok, sem="relaxed")
            dz_in = dz.to(h_ptr.dtype.element_ty)
            rows64 = rows.to(tl.int64)[:, None]  # int64 offsets: N · E and V · E may pass 2^31
            cols64 = cols.to(tl.int64)[:, None]
            for e0 in range(0, E, BLOCK_E):
                ks = e0 + tl.arange(0, BLOCK_E)
                k_ok = ks < E
                if WANT_DH:
                    w = tl.load(w_ptr + cols64 * stride_wv + ks.to(tl.int64)[None, :] * stride_we,
                                mask=col_ok[:, None] & k_ok[None, :], other=0.0)
                    dh = tl.dot(dz_in, w, input_precision=DOT_PRECISION)
                    tl.atomic_add(dh_ptr + rows64 * E + ks[None, :], dh, mask=live[:, None] & k_ok[None, :],
                                  sem="relaxed")
                if WANT_DW:
                    h = tl.load(h_ptr + rows64 * stride_hn + ks.to(tl.int64)[None, :] * stride_he,
                                mask=live[:, None] & k_ok[None, :], other=0.0)
                    dw = tl.dot(tl.trans(dz_in), h, input_precision=DOT_PRECISION)
                    tl.atomic_add(dw_ptr + cols64 * E + ks[None, :], dw, mask=col_ok[:, None] & k_ok[None, :],
                                  sem="relaxed")
