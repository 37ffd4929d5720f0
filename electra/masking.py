"""ELECTRA's masking (DESIGN §5), keyed by global sequence index so any batch split masks the same tokens.

Per sequence exactly ``max(1, min(max_predictions, round(mask_prob · n)))`` of its ``n`` maskable tokens
(not special, not padding) are selected: the ones with the smallest Philox uniforms keyed by
(seed, global sequence index, position).  85 % of the selected become [MASK], 15 % keep their token;
there are no random replacements.  The same counter-based stream as the samplers (``tnops.random``)
makes the result independent of batch size, data-parallel rank and device.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from tnops import random as tn_random

KEEP_PROB = 0.15
_KEEP_STREAM = 0x5EED_0F_0E1EC7  # a second, independent Philox key for the keep-or-[MASK] coin


class Masked(NamedTuple):
    """``input_ids`` with [MASK] written in, ``labels`` (original id where selected, -100 elsewhere),
    ``selected`` bool."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    selected: torch.Tensor


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, *, special_token_ids, mask_token_id: int,
                seed: int, sequence_offset: int = 0, mask_prob: float = 0.15, max_predictions: int = 19,
                ignore_index: int = -100) -> Masked:
    """Select and mask positions.

    Args:
        input_ids: int ``[B, L]``; attention_mask: ``[B, L]`` (0 = padding).
        special_token_ids: ids never selected ([CLS], [SEP], [PAD], ...).
        seed: Philox seed; sequence_offset: global index of row 0 (its rank/micro-batch offset).
    Returns:
        ``Masked(input_ids [B, L], labels [B, L], selected [B, L])``.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected [B, L], got shape {tuple(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask: expected shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob: expected a number in (0, 1), got {mask_prob}")
    if max_predictions < 1:
        raise ValueError(f"max_predictions: expected >= 1, got {max_predictions}")
    batch, length = input_ids.shape
    device = input_ids.device
    special = torch.as_tensor(sorted(set(special_token_ids)), dtype=input_ids.dtype, device=device)
    candidate = attention_mask.bool() & ~torch.isin(input_ids, special)
    n = candidate.sum(1)
    count = (n.double() * mask_prob).round().long().clamp(max=max_predictions).clamp(min=1)
    count = torch.minimum(count, n)  # a sequence with no maskable token gets none
    rows = torch.arange(sequence_offset, sequence_offset + batch, device=device)
    positions = torch.arange(length, device=device)
    u = tn_random.uniform(seed, rows, positions)
    u = torch.where(candidate, u, 2.0)  # non-candidates sort last
    rank = u.argsort(dim=1).argsort(dim=1)
    selected = rank < count[:, None]
    keep = tn_random.uniform(seed ^ _KEEP_STREAM, rows, positions) < KEEP_PROB
    masked_ids = torch.where(selected & ~keep, torch.full_like(input_ids, mask_token_id), input_ids)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, ignore_index))
    return Masked(masked_ids, labels, selected)
