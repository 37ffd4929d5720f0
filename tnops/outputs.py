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
