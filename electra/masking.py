"""ELECTRA's masking (DESIGN §5), keyed by global sequence index so any batch split masks the same tokens.

Per sequence exactly ``max(1, min(max_predictions, round(mask_prob · n)))`` of its ``n`` maskable tokens
(not special, not padding) are selected: the ones with the smallest Philox uniforms keyed by
(seed, global sequence index, position).  85 % of the selected become [MASK], 15 % keep their token;
there are no random replacements.  The same counter-based stream as the samplers (``tnops.random``)
makes the result independent of batch size, data-parallel rank and device.

The selected positions also come as ELECTRA's ``masked_lm_positions``: a fixed ``[B, P]`` index tensor
(``P = min(max_predictions, L)``) with a ``valid`` mask, so the generator head runs on static shapes and
no boolean-mask compaction (a host synchronisation on GPU) is needed.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from electra.seeds import derive_seed
from tnops import random as tn_random

KEEP_PROB = 0.15
IGNORE_INDEX = -100


class Masked(NamedTuple):
    """One batch's masking.

    ``input_ids`` ``[B, L]`` with [MASK] written in; ``labels`` ``[B, L]`` (the original id where selected,
    ``ignore_index`` elsewhere); ``selected`` bool ``[B, L]``; ``positions`` int64 ``[B, P]``: per sequence
    its selected positions in ascending order, then (as padding) unselected positions in ascending order,
    so the ``P`` positions of a row are distinct; ``valid`` bool ``[B, P]``: which of them are selected
    (``valid.sum(1)`` is the per-sequence count, ``valid`` holds on a prefix of each row).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    selected: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, *, special_token_ids, mask_token_id: int,
                seed: int, sequence_offset: int = 0, mask_prob: float = 0.15, max_predictions: int = 19,
                ignore_index: int = IGNORE_INDEX) -> Masked:
    """Select and mask positions, on the device of ``input_ids`` and without reading anything back to the host.

    Args:
        input_ids: int ``[B, L]``; attention_mask: ``[B, L]`` (0 = padding).
        special_token_ids: ids never selected ([CLS], [SEP], [PAD], ...), an iterable of ints.
        seed: the model seed; the selection and the keep coin use the streams ``mask-select`` and
            ``mask-keep`` derived from it (:func:`electra.seeds.derive_seed`).
        sequence_offset: global index of row 0 (its rank/micro-batch offset).
    Returns:
        ``Masked(input_ids [B, L], labels [B, L], selected [B, L], positions [B, P], valid [B, P])`` with
        ``P = min(max_predictions, L)``.
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
    candidate = attention_mask.bool()
    for special in sorted({int(i) for i in special_token_ids}):  # Python scalars: no host-to-device copy
        candidate = candidate & (input_ids != special)
    n = candidate.sum(1)
    count = (n.double() * mask_prob).round().long().clamp(max=max_predictions).clamp(min=1)
    count = torch.minimum(count, n)  # a sequence with no maskable token gets none
    rows = torch.arange(sequence_offset, sequence_offset + batch, device=device)
    columns = torch.arange(length, device=device)
    u = tn_random.uniform(derive_seed("mask-select", seed), rows, columns)
    u = torch.where(candidate, u, 2.0)  # non-candidates sort last
    # stable: ties (the non-candidates' 2.0) keep position order, so the padding positions are deterministic
    smallest = u.argsort(dim=1, stable=True)[:, :min(max_predictions, length)]
    valid = torch.arange(smallest.shape[1], device=device) < count[:, None]
    # selected positions first, then the padding ones, each group ascending (reads like a compaction)
    key = torch.where(valid, smallest, smallest + length).sort(dim=1).values
    positions = torch.where(valid, key, key - length)
    selected = torch.zeros_like(candidate).scatter(1, positions, valid)
    keep = tn_random.uniform(derive_seed("mask-keep", seed), rows, columns) < KEEP_PROB
    masked_ids = torch.where(selected & ~keep, torch.full_like(input_ids, mask_token_id), input_ids)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, ignore_index))
    return Masked(masked_ids, labels, selected, positions, valid)
