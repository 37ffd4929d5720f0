"""The SR (soft regularization) backward kernel: the gradient of ``1 - cos(e_gold, e_pred)`` scatter-added into the
rows of the embedding table.  Its forward (the cosine terms) runs in ``_mlm_combine_kernel`` of
``mlm_head_kernels.py``, whose helpers (index checks, embedding-row loads) this kernel shares; its launcher is
``mlm_head.sr_backward``.
"""
from __future__ import annotations

import triton
import triton.language as tl

from tnops.ops.mlm_head_kernels import BAD_LABELS, BAD_PREDICTIONS, _check_ids, _embedding_rows


@triton.jit
def _sr_bwd_kernel(emb_ptr, labels_ptr, pred_ptr, coef_ptr, dot_ptr, gold_sq_ptr, pred_sq_ptr, demb_ptr, flags_ptr,
                   N, V, E, stride_ev, stride_ee, ignore_index, cos_eps_sq,
                   BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
    """Scatter-add the SR gradient into the embedding rows of gold (a) and prediction (b).

    ``d(1 - cos)/da = -coef · (b·r - dot·r³·|b|²·a)`` with ``r = 1/sqrt(max(|a|²|b|², eps²))`` (the r³ term
    vanishes where the clamp is active), symmetrically for b.  Flags: on rows with a gold id and a gradient,
    labels or predictions outside ``[0, V)`` (those rows are skipped).  Rows with ``pred == gold`` contribute
    nothing: ``1 - cos(e, e)`` is 0 whatever ``e`` is (fp32 would leave a ~1e-7 gradient of rounding).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    gold = tl.load(labels_ptr + rows, mask=row_ok, other=ignore_index)
    coef = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    active = row_ok & (gold != ignore_index) & (coef != 0.0)
    if tl.max(active.to(tl.int32), axis=0) > 0:
        pred = tl.load(pred_ptr + rows, mask=active, other=0)
        active = _check_ids(flags_ptr, gold, active, V, BAD_LABELS)
        active = _check_ids(flags_ptr, pred, active, V, BAD_PREDICTIONS)
        active = active & (pred != gold)
        pred = tl.where(active, pred, 0)
        safe_gold = tl.where(active, gold, 0)
        dot = tl.load(dot_ptr + rows, mask=active, other=0.0)
        a_sq = tl.load(gold_sq_ptr + rows, mask=active, other=1.0)
        b_sq = tl.load(pred_sq_ptr + rows, mask=active, other=1.0)
        prod = a_sq * b_sq
        r = 1.0 / tl.sqrt_rn(tl.maximum(prod, cos_eps_sq))
        r3 = tl.where(prod > cos_eps_sq, r * r * r, 0.0)
        for e0 in range(0, E, BLOCK_E):
            ks = e0 + tl.arange(0, BLOCK_E)
            a, b, m2 = _embedding_rows(emb_ptr, safe_gold, pred, active, ks, E, stride_ev, stride_ee)
            da = -coef[:, None] * (b * r[:, None] - (dot * r3 * b_sq)[:, None] * a)
            db = -coef[:, None] * (a * r[:, None] - (dot * r3 * a_sq)[:, None] * b)
            tl.atomic_add(demb_ptr + safe_gold.to(tl.int64)[:, None] * E + ks[None, :], da, mask=m2,
                          sem="relaxed")
            tl.atomic_add(demb_ptr + pred.to(tl.int64)[:, None] * E + ks[None, :], db, mask=m2, sem="relaxed")
