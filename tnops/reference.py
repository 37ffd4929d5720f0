"""The eager PyTorch specification of every tnops objective (DESIGN §1).

Everything here materialises the full ``[N, V]`` logits and lets autograd take the gradients: it is slow
and memory-hungry on purpose, because it is the yardstick every faster backend is tested against.  All
functions accept explicit ``predictions`` so a fused path can be checked row by row with its own samples.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tnops import random as tn_random
from tnops.outputs import MLMLossOutput

COSINE_EPS = 1e-8


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float32 for half types, float64 stays float64: the reference never computes below float32."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def predict(logits: torch.Tensor, labels: torch.Tensor, *, prediction: str = "argmax", temperature: float = 1.0,
            disallow_correct: bool = False, seed: int | None = None, ignore_index: int = -100,
            row_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted token per row: ``argmax(z)`` (ties → lowest id) or Gumbel-max ``argmax(z/T + g)``.

    Args:
        logits: ``[N, V]`` (any float dtype; compared in float32, or float64 for float64 logits).
        labels: int ``[N]``; rows equal to ``ignore_index`` get ``ignore_index`` as prediction.
        prediction: ``"argmax"`` or ``"sample"``.
        temperature: T > 0, sampling only.
        disallow_correct: the gold token is never predicted.
        seed: Philox seed of the Gumbel noise (``tnops.random``); None draws one from torch's generator.
        row_ids: int ``[N]`` Philox row keys (default ``arange(N)``): the noise is keyed by (seed, row id, vocab id).
    Returns:
        int64 ``[N]``.
    """
    scores = _upcast(logits.detach())  # argmax in the inputs' precision (float64 inputs: float64 scores)
    masked = labels != ignore_index
    if prediction == "sample":
        seed = tn_random.draw_seed() if seed is None else seed
        rows = torch.arange(scores.shape[0], device=scores.device) if row_ids is None else row_ids.reshape(-1).long()
        scores = scores / temperature + tn_random.gumbel(seed, rows, scores.shape[1]).to(scores.dtype)
    if disallow_correct:
        gold = torch.where(masked, labels, 0).long()
        scores = scores.scatter(1, gold[:, None], float("-inf"))
    pred = scores.argmax(dim=1) if scores.shape[1] else torch.zeros_like(labels, dtype=torch.long)
    return torch.where(masked, pred, torch.full_like(pred, ignore_index))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - a·b / sqrt(max(|a|²|b|², eps²))`` per row, computed in float32 (float64 for float64 inputs).  ``a, "
      "b``: ``[M, E]`` → ``[M]``."""
    a, b = _upcast(a), _upcast(b)
    dot = (a * b).sum(-1)
    norms_sq = (a * a).sum(-1) * (b * b).sum(-1)
    return 1.0 - dot * torch.rsqrt(norms_sq.clamp_min(COSINE_EPS**2))


def sr_loss(embedding: torch.Tensor, gold_ids: torch.Tensor, pred_ids: torch.Tensor, *,
            ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Soft regularization ``mean over valid rows of 1 - cos(e_gold, e_pred)``.

    Args:
        embedding: ``[V, E]`` word-embedding table.
        gold_ids, pred_ids: int ``[*]``; rows whose gold id is ``ignore_index`` are skipped.
        reduction: ``"mean"`` (over valid rows, 0 if none), ``"sum"`` or ``"none"`` (``[*]``, 0 on skipped rows).
    Returns:
        float32 scalar, or ``[*]`` for ``"none"``.  Gradients reach both embedding rows; ids are indices.
    """
    valid = gold_ids != ignore_index
    flat_valid = valid.reshape(-1)
    gold = torch.where(valid, gold_ids, 0).long().reshape(-1)
    pred = torch.where(valid, pred_ids, 0).long().reshape(-1)
    dist = cosine_distance(select_rows(flat_valid, embedding[gold]), select_rows(flat_valid, embedding[pred]))
    # r == y gives exactly 0 (DESIGN §1): cos(e, e) = 1 for every e, whatever its rounding
    return reduce_rows(torch.where(flat_valid & (gold != pred), dist, 0).reshape(gold_ids.shape), valid, reduction)


def select_rows(live: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x [*, D]`` with the rows where ``live [*]`` is False replaced by zeros.

    Select, don't multiply: ``x * mask`` keeps a NaN or inf of a dead row (0 · inf = NaN) and leaks it into the
    loss and, through the backward of whatever follows, into the gradients of the live rows' parameters.
    """
    return torch.where(live[..., None], x, 0)


def reduce_rows(per_row: torch.Tensor, counted: torch.Tensor, reduction: str) -> torch.Tensor:
    """``"none"``: ``per_row``; ``"sum"``: its sum; ``"mean"``: sum / max(#counted, 1), so no rows gives 0."""
    if reduction == "none":
        return per_row
    total = per_row.sum()
    if reduction == "sum":
        return total
    return total / counted.sum().clamp_min(1)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, *, synonyms=None, prediction: str = "argmax",
             temperature: float = 1.0, disallow_correct: bool = False, seed: int | None = None,
             sr_weight: float = 0.0, sr_embedding: torch.Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean", predictions: torch.Tensor | None = None,
             row_ids: torch.Tensor | None = None, label_smoothing: float = 0.0, z_loss: float = 0.0) -> MLMLossOutput:
    """MLM cross-entropy with hard correction and soft regularization, from materialised logits.

    Args:
        logits: ``[*, V]``.
        labels: int ``[*]``, gold id or ``ignore_index``.
        synonyms: a ``SynonymTable`` (hard correction) or None.
        predictions: int ``[*]`` to use instead of predicting (for checking other backends row by row).
        label_smoothing: ε: the kept rows' CE is ``F.cross_entropy(..., label_smoothing=ε)``.
        z_loss: λ: ``λ·logsumexp(z)²`` per kept row, reduced like the CE.
        other keywords: as ``tnops.mlm_loss``.
    Returns:
        ``MLMLossOutput``; losses in float32 (float64 for float64 inputs).
    """
    lead = labels.shape
    y = labels.reshape(-1)
    masked = y != ignore_index
    z = select_rows(masked, _upcast(logits.reshape(-1, logits.shape[-1])))
    if predictions is None:
        pred = predict(z, y, prediction=prediction, temperature=temperature, disallow_correct=disallow_correct,
                       seed=seed, ignore_index=ignore_index, row_ids=row_ids)
    else:
        pred = torch.where(masked, predictions.reshape(-1).to(y.device).long(), ignore_index)
    if synonyms is None:
        corrected = torch.zeros_like(masked)
    else:
        corrected = masked & (pred != y) & synonyms.to(y.device).is_synonym(y.long(), pred)
    kept = masked & ~corrected
    gold = torch.where(kept, y, 0).long()
    live_z = select_rows(kept, z)
    per_row = torch.where(kept, F.cross_entropy(live_z, gold, reduction="none", label_smoothing=label_smoothing),
                          0) if z.shape[0] else z.new_zeros(0)
    ce = reduce_rows(per_row.reshape(lead), kept, reduction)
    z_rows = torch.where(kept, z_loss * torch.logsumexp(live_z, dim=-1) ** 2, 0) if z.shape[0] else z.new_zeros(0)
    zl = reduce_rows(z_rows.reshape(lead), kept, reduction)
    if sr_weight:
        if sr_embedding is None:
            raise ValueError("sr_embedding: soft regularization needs an embedding table [V, E] when no LM-head "
                             "weight is given")
        sr = sr_loss(sr_embedding, y.reshape(lead), pred.reshape(lead), ignore_index=ignore_index, reduction=reduction)
    else:
        sr = torch.zeros_like(ce)
    return MLMLossOutput(ce + zl + sr_weight * sr, ce, sr, pred.reshape(lead), corrected.reshape(lead), zl)


def linear_mlm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, bias=None,
                    sr_embedding=None, **kwargs) -> MLMLossOutput:
    """``mlm_loss`` of the LM head ``logits = hidden @ weight.T + bias``.

    Args:
        hidden: ``[*, E]``; weight: ``[V, E]``; bias: ``[V]`` or None; labels: int ``[*]``.
        sr_embedding: ``[V, E']``; defaults to ``weight`` (the tied word-embedding table).
    Returns:
        ``MLMLossOutput``.
    """
    masked = labels != kwargs.get("ignore_index", -100)
    logits = F.linear(select_rows(masked, hidden), weight, bias)  # ignored rows never reach dW
    return mlm_loss(logits, labels, sr_embedding=weight if sr_embedding is None else sr_embedding, **kwargs)


def rtd_loss(disc_logits: torch.Tensor, corrupted_ids: torch.Tensor, original_ids: torch.Tensor,
             attention_mask: torch.Tensor | None = None, corrected: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Replaced-token-detection BCE with the hard-correction label flip.

    ``label = (corrupted != original) and not corrected``; BCE-with-logits averaged over positions with
    ``attention_mask == 1``.

    Args:
        disc_logits: ``[*]`` discriminator logits (one per position).
        corrupted_ids, original_ids: int ``[*]``.
        attention_mask: ``[*]`` (1 = real token) or None for all positions.
        corrected: bool ``[*]`` positions whose replacement is a synonym of the original, or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    Returns:
        float32 scalar (``[*]`` for ``"none"``, 0 at padding).
    """
    label = corrupted_ids != original_ids
    if corrected is not None:
        label &= ~corrected.bool()
    valid = torch.ones_like(label) if attention_mask is None else attention_mask.bool()
    logits = torch.where(valid, _upcast(disc_logits), 0)  # padding selected out, so a NaN there stays out
    per_pos = F.binary_cross_entropy_with_logits(logits, label.to(logits.dtype), reduction="none")
    return reduce_rows(torch.where(valid, per_pos, 0), valid, reduction)


def sentence_sr_loss(hidden_corrupted: torch.Tensor, hidden_original: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sentence-level SR: ``KL(softmax(H_p) || softmax(H_s))`` over the hidden dimension, mean over real tokens.

    Args:
        hidden_corrupted: ``[*, H]`` discriminator states of the corrupted sequence (H_p).
        hidden_original: ``[*, H]`` states of the original sequence (H_s).
        attention_mask: ``[*]`` or None.
    Returns:
        float32 scalar.
    """
    lead = hidden_corrupted.shape[:-1]
    valid = torch.ones(lead, dtype=torch.bool, device=hidden_corrupted.device) if attention_mask is None \
        else attention_mask.bool()
    log_p = F.log_softmax(select_rows(valid, _upcast(hidden_corrupted)), dim=-1)
    log_s = F.log_softmax(select_rows(valid, _upcast(hidden_original)), dim=-1)
    per_token = (log_p.exp() * (log_p - log_s)).sum(-1)
    return reduce_rows(torch.where(valid, per_token, 0), valid, "mean")
