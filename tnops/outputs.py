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
        z_loss: ``z_loss · lse²`` over kept rows, reduced like ``mlm_loss`` (zero when ``z_loss=0``).

    ``loss`` always carries the gradient of everything.  With ``z_loss > 0`` and a scalar reduction, ``mlm_loss`` and
    ``z_loss`` are reported values without a gradient (the fused backends compute one gradient of the whole
    objective); otherwise ``mlm_loss`` and ``sr_loss`` carry their own gradients too.
    """

    loss: torch.Tensor
    mlm_loss: torch.Tensor
    sr_loss: torch.Tensor
    predictions: torch.Tensor
    corrected: torch.Tensor
    z_loss: torch.Tensor


class MLMRows(NamedTuple):
    """What a backend's ``mlm_forward`` returns: per-row statistics over the N flattened rows, from which
    ``tnops.functional`` composes every loss (the backend never knows which).

    Float results are float32, or float64 where the inputs (for ``sr``: the SR table) are float64.  Rows whose
    label is ``ignore_index`` hold 0 in every float statistic.

    Attributes:
        nll: ``[N]`` ``lse - z_gold`` on masked rows (computed without cancellation on confident rows), corrected
            rows included.
        lse: ``[N]`` log-sum-exp of the row's logits.
        zmean: ``[N]`` mean of the row's logits over the vocabulary (bias included).
        predictions: int64 ``[N]``, ``ignore_index`` on unmasked rows.
        corrected: bool ``[N]`` rows dropped by hard correction.
        sr: ``[N]`` SR ``1 - cos`` on masked rows (0 elsewhere), or None when SR was not asked for.
        sr_aux: float32 ``[K, N]`` whatever the backend's backward needs, or None.
        grads: ``(d_inputs, d_weight, d_bias)`` of ``Σ_kept f_r`` for the fused coefficients (None entries where
            not wanted) when the backend fuses the gradient into the forward pass (``FUSES_GRADIENTS``), else None.
    """

    nll: torch.Tensor
    lse: torch.Tensor
    zmean: torch.Tensor
    predictions: torch.Tensor
    corrected: torch.Tensor
    sr: torch.Tensor | None = None
    sr_aux: torch.Tensor | None = None
    grads: tuple | None = None
