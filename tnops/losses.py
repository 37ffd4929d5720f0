"""Production tensor maths shared by the backends and ``functional``: reductions, the SR cosine and its
gradient, the RTD BCE and its gradient, sentence-level SR.

Every function here selects dead rows out (``torch.where``) instead of multiplying them by a 0/1 mask, so a
NaN or inf in an ignored row or a padding position reaches neither a loss nor a gradient (0 · inf = NaN).
``tnops.reference`` is the independent eager spec these are tested against; nothing here imports it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-8  # cos = a·b / sqrt(max(|a|²|b|², eps²)): zero rows give cos 0, never NaN


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def select_rows(live: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x [*, D]`` with rows where ``live [*]`` is False replaced by zeros (selected, not multiplied)."""
    return torch.where(live[..., None], x, 0)


def reduce_rows(per_row: torch.Tensor, counted: torch.Tensor, reduction: str) -> torch.Tensor:
    """``"none"``: ``per_row``; ``"sum"``: its sum; ``"mean"``: sum / max(#counted, 1), so no rows gives 0."""
    if reduction == "none":
        return per_row
    total = per_row.sum()
    if reduction == "sum":
        return total
    return total / counted.sum().clamp_min(1)


def reduce_sum(total: torch.Tensor, counted: torch.Tensor, reduction: str) -> torch.Tensor:
    """A scalar reduction from a sum already made: ``"sum"``: ``total``; ``"mean"``: ``total / max(#counted, 1)``."""
    return total if reduction == "sum" else total / counted.sum().clamp_min(1)


def _sr_terms(embedding, gold, pred, live):
    cdt = compute_dtype(embedding.dtype)
    a = select_rows(live, embedding[torch.where(live, gold, 0).long()].to(cdt))
    b = select_rows(live, embedding[torch.where(live, pred, 0).long()].to(cdt))
    dot, a_sq, b_sq = (a * b).sum(-1), (a * a).sum(-1), (b * b).sum(-1)
    norms_sq = a_sq * b_sq
    return a, b, dot, a_sq, b_sq, torch.rsqrt(norms_sq.clamp_min(COSINE_EPS**2)), norms_sq > COSINE_EPS**2


def sr_dot_and_norms(embedding: torch.Tensor, gold: torch.Tensor, pred: torch.Tensor,
                     live: torch.Tensor) -> torch.Tensor:
    """``[3, N]``: ``a·b``, ``|a|²``, ``|b|²`` of the gold and predicted rows (0 where not ``live``)."""
    _, _, dot, a_sq, b_sq, _, _ = _sr_terms(embedding, gold, pred, live)
    return torch.stack([dot, a_sq, b_sq])


def sr_rows(embedding: torch.Tensor, gold: torch.Tensor, pred: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """Per-row SR ``1 - cos(e_gold, e_pred)`` (0 where not ``live``), no autograd.

    Args: embedding ``[V, E]``; gold, pred int ``[N]``; live bool ``[N]``.  Returns float32 ``[N]`` (float64 for
    float64 tables).
    """
    _, _, dot, _, _, inv_norm, _ = _sr_terms(embedding, gold, pred, live)
    # pred == gold: exactly 0 (the float cosine of a vector with itself may round to 1 - 6e-8)
    return torch.where(live & (gold != pred), 1.0 - dot * inv_norm, 0)


def sr_rows_backward(embedding: torch.Tensor, gold: torch.Tensor, pred: torch.Tensor, live: torch.Tensor,
                     coef: torch.Tensor) -> torch.Tensor:
    """Gradient of ``Σ coef[row] · sr_rows[row]`` w.r.t. ``embedding``: ``[V, E]`` in the compute dtype.

    With r = 1/(|a||b|) and cos = (a·b) r:  d(1 - cos)/da = -(r b - (a·b) r³ |b|² a), and symmetrically for b;
    where the norm product is clamped by eps, r is a constant and the second term vanishes.  Both rows receive
    their part (index_add, so gold == pred adds up).
    """
    out = torch.zeros(embedding.shape, dtype=compute_dtype(embedding.dtype), device=embedding.device)
    return sr_rows_backward_add_(out, embedding, gold, pred, live, coef)


def sr_rows_backward_add_(out: torch.Tensor, embedding: torch.Tensor, gold: torch.Tensor, pred: torch.Tensor,
                          live: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``out += d(Σ coef[row] · sr_rows[row]) / d embedding``, in place, touching only the gold and predicted rows
    (``out [V, E]``, any float dtype; the rows are computed in the compute dtype).  Returns ``out``.

    A fused backward adds the SR gradient straight into the ``d weight`` it owns when the SR table is the LM
    head's weight: no dense ``[V, E]`` buffer, no extra pass over it."""
    a, b, dot, a_sq, b_sq, r, unclamped = _sr_terms(embedding, gold, pred, live)
    # pred == gold: cos(e, e) = 1 for every e, so the gradient is exactly 0 (not the rounding of two equal terms)
    c = torch.where(live & (gold != pred), coef.to(a.dtype), 0)[:, None]
    r3_dot = torch.where(unclamped, dot * r**3, 0)[:, None]
    r = r[:, None]
    grad_a = -c * (r * b - r3_dot * b_sq[:, None] * a)
    grad_b = -c * (r * a - r3_dot * a_sq[:, None] * b)
    out.index_add_(0, torch.where(live, gold, 0).long(), grad_a.to(out.dtype))
    out.index_add_(0, torch.where(live, pred, 0).long(), grad_b.to(out.dtype))
    return out


def rtd_rows(logits: torch.Tensor, corrupted: torch.Tensor, original: torch.Tensor, attention_mask: torch.Tensor | None,
             corrected: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position BCE-with-logits of ``label = (corrupted != original) & !corrected`` and its derivative.

    Args: all ``[N]``; attention_mask (0 = padding) and corrected may be None.  Returns ``(loss, dloss/dlogit)``,
    float32 ``[N]`` (float64 for float64 logits), both 0 at padding.
    """
    label = corrupted != original
    if corrected is not None:
        label = label & ~corrected.bool()
    valid = torch.ones_like(label) if attention_mask is None else attention_mask != 0
    x = torch.where(valid, logits.to(compute_dtype(logits.dtype)), 0)
    y = label.to(x.dtype)
    loss = x.clamp_min(0) - x * y + torch.log1p(torch.exp(-x.abs()))
    grad = torch.sigmoid(x) - y
    return torch.where(valid, loss, 0), torch.where(valid, grad, 0)


def sentence_sr_loss(hidden_corrupted: torch.Tensor, hidden_original: torch.Tensor,
                     attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``KL(softmax(H_p) || softmax(H_s))`` over the last dimension, mean over real tokens (autograd).

    Args: hidden_* ``[*, H]``; attention_mask ``[*]`` or None.  Returns a float32 (float64) scalar.
    """
    lead = hidden_corrupted.shape[:-1]
    valid = torch.ones(lead, dtype=torch.bool, device=hidden_corrupted.device) if attention_mask is None \
        else attention_mask != 0
    cdt = compute_dtype(hidden_corrupted.dtype)
    log_p = F.log_softmax(select_rows(valid, hidden_corrupted.to(cdt)), dim=-1)
    log_s = F.log_softmax(select_rows(valid, hidden_original.to(cdt)), dim=-1)
    per_token = (log_p.exp() * (log_p - log_s)).sum(-1)
    return reduce_rows(torch.where(valid, per_token, 0), valid, "mean")
