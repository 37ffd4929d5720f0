"""Fused LM head + MLM cross-entropy + hard correction + Gumbel-max sampling + SR cosine: the ``@triton.jit``
kernels.  Their launchers (argument preparation, tiles, grids) are in ``mlm_head.py``.

What is fused: ``logits = hidden @ weight.T + bias`` is formed tile by tile in registers and never written
out.  Forward, one tiled pass over the vocabulary keeps per row the running max, the sum-exp of the non-gold
ids, the gold logit and the best (arg)max of ``z`` or of ``z / T + gumbel`` (Philox keyed by (seed, row, vocab
id), shared with ``tnops.random``).  The vocabulary is split over several programs per row block; a small combine kernel
merges the partial rows, looks the prediction up in the CSR synonym table (binary search), writes
the per-row statistics (log-sum-exp, NLL, mean logit), and computes the SR cosine between the embedding rows of
gold and prediction.
Confident rows (p(gold) → 1, a trained head) stay exact in fp32: the forward sums ``exp`` over the non-gold ids
apart, so the NLL is ``log1p`` of that sum and ``1 - p(gold)`` (the backward's gold entry) a quotient, neither the
difference of near-equal numbers (``lse - z_gold``, ``p - 1``); SR is exactly 0 where the prediction is gold.
Backward recomputes each ``[BLOCK_N, BLOCK_V]`` logit tile, forms ``α·softmax - γ·onehot - δ/V`` from
per-row coefficients and accumulates ``dh`` and ``dW`` with relaxed fp32 atomics (``red.global``).  Rows are
visited through a permutation that puts masked rows first (in backward: rows with a coefficient), so rows
without work, wherever they sit in the batch, fill whole row blocks that exit at once.  Extra memory is
O(N · splits + V): partial rows, the permutation, plus fp32 gradient accumulators.

Given logits (``mlm_loss``, ``HAS_WEIGHT=False``): the same kernels read each logit tile from the ``[N, V]``
logits through their strides instead of forming it by ``tl.dot``, and backward writes ``dz`` straight into
``d_logits`` (every element, zeros included: no memset).

Index checks ("clamp and flag", helpers in ``mlm_head_tiles.py``): every index a kernel dereferences is checked
there, since under ``torch.compile`` nothing checks it before; an out-of-range index is masked or clamped and
flagged (slot ``BAD_*`` of the call's int32 flags); the launcher raises from the flags afterwards.

Limits: fp32 uses IEEE dots (no TF32) so gradients match the reference to ~1e-6; half inputs use
tensor-core dots with fp32 accumulation; float64 is not served (the torch backend is).  Under the
interpreter (TRITON_INTERPRET=1) the launchers accept fp32 only: its bf16 ``tl.dot`` is broken upstream
(triton-lang/triton#11584).  Inputs of any strides are read correctly (see ``mlm_head.py``).
"""
from __future__ import annotations

import triton
import triton.language as tl

from tnops.ops.mlm_head_tiles import (  # noqa: F401 (BAD_*, NUM_FLAGS: the launchers read them here)
    BAD_LABELS,
    BAD_OFFSETS,
    BAD_ORDER,
    BAD_PREDICTIONS,
    BAD_ROW_IDS,
    BAD_SYN_IDS,
    NUM_FLAGS,
    ROW_ID_LIMIT,
    _block_rows,
    _check_ids,
    _embedding_rows,
    _flag,
    _gumbel_tile,
    _gumbel_tile_at,
    _log1p_below_one,
    _logit_tile,
)


@triton.jit
def _mlm_fwd_kernel(h_ptr, w_ptr, b_ptr, labels_ptr, order_ptr, row_ids_ptr, part_max_ptr, part_other_ptr,
                    part_gold_ptr, part_best_ptr, part_zsum_ptr, part_idx_ptr, tiles_ptr, flags_ptr,
                    N, V, E, stride_hn, stride_he, stride_wv, stride_we,
                    seed, temperature, ignore_index, v_per_split, v_offset, V_all,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, SAMPLE: tl.constexpr, DISALLOW: tl.constexpr,
                    HAS_ROW_IDS: tl.constexpr, COUNT_TILES: tl.constexpr, SHARDED: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_V: tl.constexpr, BLOCK_E: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Partial statistics of row block ``pid_n`` over vocabulary slice ``split``.

    The block's rows are ``order[pid_n·BLOCK_N : (pid_n+1)·BLOCK_N]``: the launcher puts masked rows first,
    so unmasked rows, wherever they sit in the batch, fill whole blocks that return at once.
    Writes ``[split, row]`` entries: ``max_v z``, ``Σ_{v != gold} exp(z_v - max)`` (the gold term is left out, so
    ``1 - p(gold)`` never comes from a subtraction; the combine adds it back from ``z[gold]``), ``z[gold]`` (in the
    split holding gold; the combine reads it there alone), the best score (``z`` or ``z / T + g``, gold excluded
    under DISALLOW) and its id (lowest on ties), and ``Σ_v z_v`` over the slice (fp32; the combine divides the
    total by V).
    ``COUNT_TILES`` (tests): add 1 to ``tiles_ptr`` per program that does any work.  Flags: rows of ``order``
    outside ``[0, N)``, masked labels outside ``[0, V_all)``, row ids outside ``[0, 2^32)`` (those rows are skipped).
    Vocabulary parallelism: the head holds ids ``[v_offset, v_offset + V)`` of ``V_all`` (one process: 0 and V);
    labels are global ids, the best id is this block's index, and ``SHARDED`` keys the noise by the global id
    wherever the block starts (``_gumbel_tile_at``).
    """
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    rows, row_ok = _block_rows(order_ptr, pid_n * BLOCK_N + tl.arange(0, BLOCK_N), N, flags_ptr)
    gold = tl.load(labels_ptr + rows, mask=row_ok, other=ignore_index)
    if SHARDED:  # labels are global ids; gold becomes this head's index (outside [0, V): another block's)
        active = _check_ids(flags_ptr, gold, row_ok & (gold != ignore_index), V_all, BAD_LABELS)
        gold = gold - v_offset
    else:
        active = _check_ids(flags_ptr, gold, row_ok & (gold != ignore_index), V, BAD_LABELS)
    run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    run_other = tl.zeros((BLOCK_N,), tl.float32)
    gold_logit = tl.zeros((BLOCK_N,), tl.float32)
    best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int32)
    z_sum = tl.zeros((BLOCK_N,), tl.float32)
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
            z_sum += tl.sum(z, axis=1)  # ids past v_stop hold 0 here: their weight rows, bias and logits load as 0
            z = tl.where(col_ok[None, :], z, float("-inf"))
            tile_max = tl.max(z, axis=1)
            new_max = tl.maximum(run_max, tile_max)
            # a row whose logits so far are all -inf (masked vocabulary) adds 0, not exp(-inf + inf) = NaN
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            is_gold = cols[None, :] == gold[:, None]
            if HAS_WEIGHT:
                gold_logit += tl.sum(tl.where(is_gold, z, 0.0), axis=1)
            else:  # stored by the tile holding gold, not carried: the carried row vector costs ~40 registers
                gold_here = active & (gold >= v0) & (gold < v0 + BLOCK_V)
                tl.store(part_gold_ptr + split * N + rows, tl.sum(tl.where(is_gold, z, 0.0), axis=1), mask=gold_here)
            z_other = tl.where(is_gold, float("-inf"), z)  # the non-gold logits: their sum-exp, DISALLOW's scores
            run_other = run_other * tl.exp(run_max - shift) + tl.sum(tl.exp(z_other - shift[:, None]), axis=1)
            if SAMPLE or DISALLOW:
                score = z_other if DISALLOW else z
                if SAMPLE:  # -inf / T + g is -inf: the gold id stays out under DISALLOW
                    score = tl.div_rn(score, temperature)  # before the noise: the order keeps registers in budget
                    if SHARDED:
                        score = score + _gumbel_tile_at(seed, row_keys, v0 + v_offset, BLOCK_V)
                    else:
                        score = score + _gumbel_tile(seed, row_keys, v0, BLOCK_V)
                    score = tl.where(col_ok[None, :], score, float("-inf"))
                tile_best = tl.max(score, axis=1)
                better = tile_best > best
                best = tl.where(better, tile_best, best)
            else:  # the score is z: its best is run_max, not carried apart (the registers z_sum needs)
                score = z
                better = tile_max > run_max
            tile_idx = tl.argmax(score, axis=1, tie_break_left=True).to(tl.int32) + v0
            best_idx = tl.where(better, tile_idx, best_idx)
            run_max = new_max
    out = split * N + rows
    tl.store(part_max_ptr + out, run_max, mask=row_ok)
    tl.store(part_other_ptr + out, run_other, mask=row_ok)
    if HAS_WEIGHT:
        tl.store(part_gold_ptr + out, gold_logit, mask=row_ok)
    if SAMPLE or DISALLOW:
        tl.store(part_best_ptr + out, best, mask=row_ok)
    else:
        tl.store(part_best_ptr + out, run_max, mask=row_ok)
    tl.store(part_zsum_ptr + out, z_sum, mask=row_ok)
    tl.store(part_idx_ptr + out, best_idx, mask=row_ok)


@triton.jit
def _mlm_combine_kernel(part_max_ptr, part_other_ptr, part_gold_ptr, part_best_ptr, part_zsum_ptr, part_idx_ptr,
                        labels_ptr, offsets_ptr, syn_ids_ptr, emb_ptr, lse_ptr, nll_ptr, zmean_ptr, complement_ptr,
                        pred_ptr, corrected_ptr, sr_ptr, sr_dot_ptr, sr_gold_sq_ptr, sr_pred_sq_ptr, flags_ptr, N, V,
                        NNZ, SPLITS, v_per_split, E_SR, stride_ev, stride_ee, ignore_index, cos_eps_sq,
                        HAS_TABLE: tl.constexpr, SEARCH_STEPS: tl.constexpr, HAS_SR: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
    """Merge the partial rows; prediction, hard correction (CSR binary search), NLL and mean logit per row, SR.

    ``lse = M + log(other + exp(z_gold - M))`` with ``other = Σ_s other_s · exp(max_s - M)``, the non-gold sum;
    the best over splits is taken in split order with a strict ``>`` so ties keep the lowest id.  A row is
    corrected when ``pred != gold`` and ``pred`` is in ``syn_ids[offsets[gold] : offsets[gold + 1]]`` (sorted).
    ``nll = lse - z_gold`` and ``zmean = Σ_s zsum_s / V`` on every masked row, corrected ones included (the
    correction is applied by the caller), 0 on the others.
    SR: ``1 - dot / sqrt(max(|a|²|b|², eps²))``, exactly 0 when ``pred == gold``.

    Confident rows (p(gold) → 1, NLL far below fp32's epsilon relative to lse): ``complement = other / total
    = 1 - p(gold)`` (no subtraction; the backward's gold entry) and, where ``p(gold) > 1/2`` (then gold is the
    row max and ``x = other · exp(M - z_gold) < 1``), ``NLL = log1p(x)`` instead of ``lse - z_gold``.
    Flags: masked labels outside ``[0, V)``; a CSR row outside ``0 <= offsets[g] <= offsets[g + 1] <= NNZ``
    (searched as empty); synonym ids met by the search outside ``[0, V)``.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    gold = tl.load(labels_ptr + rows, mask=row_ok, other=ignore_index)
    active = _check_ids(flags_ptr, gold, row_ok & (gold != ignore_index), V, BAD_LABELS)
    run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    z_sum = tl.zeros((BLOCK_N,), tl.float32)
    for s in range(SPLITS):  # the sum of logits here, where fewer values are live
        run_max = tl.maximum(run_max, tl.load(part_max_ptr + s * N + rows, mask=row_ok, other=float("-inf")))
        z_sum += tl.load(part_zsum_ptr + s * N + rows, mask=row_ok, other=0.0)
    safe_max = tl.where(run_max == float("-inf"), 0.0, run_max)
    other = tl.zeros((BLOCK_N,), tl.float32)
    best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int32)
    for s in range(SPLITS):
        part = s * N + rows
        m = tl.load(part_max_ptr + part, mask=row_ok, other=float("-inf"))
        other += tl.load(part_other_ptr + part, mask=row_ok, other=0.0) * tl.exp(m - safe_max)
        b = tl.load(part_best_ptr + part, mask=row_ok, other=float("-inf"))
        i = tl.load(part_idx_ptr + part, mask=row_ok, other=0)
        better = b > best
        best = tl.where(better, b, best)
        best_idx = tl.where(better, i, best_idx)
    safe_gold = tl.where(active, gold, 0)
    gold_logit = tl.load(part_gold_ptr + (safe_gold // v_per_split) * N + rows, mask=active, other=0.0)
    total = other + tl.exp(gold_logit - safe_max)
    lse = safe_max + tl.log(tl.where(active, total, 1.0))
    # the forward kernel's ids lie in [0, V); clamped all the same, as a row it skipped has none
    pred = tl.minimum(tl.maximum(tl.where(active, best_idx, 0), 0), V - 1)
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
    tl.store(lse_ptr + rows, tl.where(active, lse, 0.0), mask=row_ok)  # an unmasked row of a live block saw bias
    confident = other + other < total  # p(gold) > 1/2: gold is the row max, x < 1
    x = other * tl.exp(tl.where(confident, safe_max - gold_logit, 0.0))
    nll = tl.where(confident, _log1p_below_one(x), lse - gold_logit)
    tl.store(nll_ptr + rows, tl.where(active, nll, 0.0), mask=row_ok)
    tl.store(zmean_ptr + rows, tl.where(active, z_sum / V, 0.0), mask=row_ok)
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
def _dz_tile(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, complement_ptr, flags_ptr, rows, live, alpha, gamma, delta,
             cols, col_ok, V, V_all, E, stride_hn, stride_he, stride_wv, stride_we, ignore_index,
             HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_COMPLEMENT: tl.constexpr, SHARDED: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_E: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``(dz, live)``: the fp32 ``[BLOCK_N, BLOCK_V]`` tile of ``α·softmax - γ·onehot(gold) - δ/V`` (per-row
    coefficients; 0 off ``live``, selected out, so a NaN there reaches nothing), and ``live`` less the rows whose
    label is ``ignore_index`` or out of ``[0, V)`` (flagged).  ``SHARDED``: the head is a block of a vocabulary of
    ``V_all`` ids; the labels are the launcher's indices into it (``V`` where the gold id is another block's,
    ``ignore_index`` = -1 on rows without one), ``lse`` and ``complement`` are the whole row's.

    The gold entry is ``α·(p_gold - 1) + (α - γ)``; ``HAS_COMPLEMENT``: ``-α·complement + (α - γ)`` with the
    forward's ``complement = 1 - p(gold)`` (summed over the other ids, exact when p(gold) → 1, where
    ``exp(z_gold - lse) - 1`` cancels to 0)."""
    gold = tl.load(labels_ptr + rows, mask=live, other=ignore_index)
    if SHARDED:  # this head's indices from the launcher (another block's gold: V, no column); nothing is dereferenced
        live = live & (gold != ignore_index)
    else:
        live = _check_ids(flags_ptr, gold, live & (gold != ignore_index), V, BAD_LABELS)
    lse = tl.load(lse_ptr + rows, mask=live, other=0.0)
    z = _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, live, col_ok, E, stride_hn, stride_he,
                    stride_wv, stride_we, HAS_WEIGHT, HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_E, DOT_PRECISION)
    p = tl.exp(z - lse[:, None])
    is_gold = cols[None, :] == gold[:, None]
    if HAS_COMPLEMENT:
        gold_minus_one = -tl.load(complement_ptr + rows, mask=live, other=0.0)[:, None]
    else:
        gold_minus_one = p - 1.0  # read on the gold entry only
    gold_entry = alpha[:, None] * gold_minus_one + (alpha - gamma)[:, None]
    if SHARDED:
        dz = tl.where(is_gold, gold_entry, alpha[:, None] * p) - (delta / V_all)[:, None]
    else:
        dz = tl.where(is_gold, gold_entry, alpha[:, None] * p) - (delta / V)[:, None]
    return tl.where(live[:, None] & col_ok[None, :], dz, 0.0), live


@triton.jit
def _mlm_bwd_kernel(h_ptr, w_ptr, b_ptr, labels_ptr, order_ptr, lse_ptr, complement_ptr, coef_ptr, dh_ptr, dw_ptr,
                    db_ptr, tiles_ptr, flags_ptr, N, V, E, stride_hn, stride_he, stride_wv, stride_we, ignore_index,
                    V_all, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_COMPLEMENT: tl.constexpr,
                    SHARDED: tl.constexpr,
                    WANT_DH: tl.constexpr, WANT_DW: tl.constexpr, WANT_DB: tl.constexpr, COUNT_TILES: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_E: tl.constexpr, GROUP_N: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    """The gradient for per-row coefficients ``coef [3, N]`` (contiguous rows α, γ, δ), one tile.

    ``dz = α·exp(z - lse) - γ·onehot(gold) - δ/V`` (gold entry without cancellation: see ``_dz_tile``);
    ``dh += dz @ W[tile]``, ``dW[tile] += dzᵀ @ h``,
    ``db[tile] += Σ_rows dz``, all fp32 atomics.  A row is live when any of its coefficients is not 0; the rows
    of a block are ``order[...]`` with the live rows first, so dead rows fill whole blocks, and a tile
    whose rows are all dead returns before touching memory (``COUNT_TILES``: as in the forward).
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
    alpha = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    gamma = tl.load(coef_ptr + N + rows, mask=row_ok, other=0.0)
    delta = tl.load(coef_ptr + 2 * N + rows, mask=row_ok, other=0.0)
    live = row_ok & ((alpha != 0.0) | (gamma != 0.0) | (delta != 0.0))
    if not HAS_WEIGHT:  # WANT_DH: the launcher runs this variant only for d_logits
        cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        dz, live = _dz_tile(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, complement_ptr, flags_ptr, rows, live, alpha,
                            gamma, delta, cols, col_ok, V, V_all, E, stride_hn, stride_he, stride_wv,
                            stride_we, ignore_index, HAS_WEIGHT, HAS_BIAS, HAS_COMPLEMENT, SHARDED, BLOCK_N,
                            BLOCK_V, BLOCK_E, DOT_PRECISION)
        tl.store(dh_ptr + rows.to(tl.int64)[:, None] * V + cols[None, :], dz.to(dh_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])
    else:
        if tl.max(live.to(tl.int32), axis=0) > 0:
            if COUNT_TILES:
                tl.atomic_add(tiles_ptr, 1)
            cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            dz, live = _dz_tile(h_ptr, w_ptr, b_ptr, labels_ptr, lse_ptr, complement_ptr, flags_ptr, rows, live,
                                alpha, gamma, delta, cols, col_ok, V, V_all, E, stride_hn, stride_he,
                                stride_wv, stride_we, ignore_index, HAS_WEIGHT, HAS_BIAS, HAS_COMPLEMENT, SHARDED,
                                BLOCK_N, BLOCK_V, BLOCK_E, DOT_PRECISION)
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
