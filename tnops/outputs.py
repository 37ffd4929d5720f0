"""Result types returned by the public losses."""
from __future__ import annotations

from typing import NamedTuple

import torch


class MLMLossOutput(NamedTuple):
    """What ``linear_mlm_loss`` / ``mlm_loss`` return.

    Attributes:
        loss: ``mlm_loss + sr_weight * sr_loss``; a scalar for ``reduction="mean"|"sum"``, ``[*]`` for ``"none"``.
        mlm_loss: cross-entropy over kept rows (masked and not corrected), same shape as ``loss``.
        sr_loss: soft-regularization term ``1 - cos(e_gold, e_pred)`` over masked rows (0 when ``sr_weight == 0``).
        predictions: int64 ``[*]`` argmax or Gumbel-max prediction per masked row, ``ignore_index`` elsewhere.
        corrected: bool ``[*]`` rows whose prediction is a listed synonym of the gold token (hard correction).
    """

    loss: torch.Tensor
    mlm_loss: torch.Tensor
    sr_loss: torch.Tensor
    predictions: torch.Tensor
    corrected: torch.Tensor


class MLMRows(NamedTuple):
    """What a backend's ``mlm_forward`` returns: per-row results over the N flattened rows.

    Float results are float32, or float64 where the inputs (for ``sr``: the SR table) are float64.

    Attributes:
        ce: ``[N]`` cross-entropy ``lse - z_gold`` on kept rows (masked, not corrected), 0 elsewhere.
        lse: ``[N]`` log-sum-exp of the row's logits (0 where the backend skipped the row).
        predictions: int64 ``[N]``, ``ignore_index`` on unmasked rows.
        corrected: bool ``[N]`` rows dropped by hard correction.
        sr: ``[N]`` SR ``1 - cos`` on masked rows (0 elsewhere), or None when SR was not asked for.
        sr_aux: float32 ``[K, N]`` whatever the backend's SR backward needs, or None.
        grads: ``(d_inputs, d_weight, d_bias)`` of ``Σ_kept ce`` (None entries where not wanted) when the
            backend fuses the gradient into the forward pass (``FUSES_GRADIENTS``), else None.
    """

    ce: torch.Tensor
    lse: torch.Tensor
    predictions: torch.Tensor
    corrected: torch.Tensor
    sr: torch.Tensor | None = None
    sr_aux: torch.Tensor | None = None
    grads: tuple | None = None
