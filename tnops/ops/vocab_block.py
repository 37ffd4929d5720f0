"""The Triton forward kernel on one block of the vocabulary: a rank's part of the vocabulary-parallel loss
(``tnops.distributed``).

The head (or the given logits) holds ids ``[v_offset, v_offset + V)`` of a vocabulary of ``vocab_all``; labels are
global ids.  ``block_statistics`` runs ``_mlm_fwd_kernel`` with ``SHARDED`` (Gumbel noise keyed by the global id
wherever the block starts) and merges its per-split partials with a few ``[splits, N]`` tensor ops into the block's
per-row statistics, the layout of ``tnops::mlm_shard_stats_native``.  The backward is ``mlm_head_backward`` with
``v_offset``/``vocab_all`` and the whole row's lse and ``1 - p(gold)``.
"""
from __future__ import annotations

import torch
import triton

from tnops.ops import mlm_head_kernels as kernels
from tnops.ops.config import head_config, on_inputs_device
from tnops.ops.mlm_head import (
    _check_head,
    _check_lengths,
    _dot_precision,
    _flat,
    _messages,
    _new_flags,
    philox_seed,
    raise_flagged,
    rows_first,
)


@on_inputs_device
def block_statistics(hidden, weight, bias, labels, *, v_offset: int, vocab_all: int, prediction="argmax",
                     temperature=1.0, disallow_correct=False, seed=0, ignore_index=-100, row_ids=None, config=None):
    """Per-row partial statistics of a vocabulary block.

    Args:
        hidden ``[N, E]``, weight ``[V, E]`` (this block's rows), bias ``[V]`` or None; ``weight=None``: ``hidden`` is
        this block's ``[N, V]`` columns of the logits.  labels: int64 ``[N]`` global ids or ``ignore_index``.
        v_offset, vocab_all: the block holds ids ``[v_offset, v_offset + V)`` of ``vocab_all``.
        row_ids: int64 ``[N]`` Philox row keys or None (``arange(N)``).
    Returns:
        ``(stats [5, N] fp32, best_ids [N] int64)``: the block's max logit, ``Σ_{v≠gold} exp(z_v − max)`` (every
        v where the gold id is another block's), the gold logit (0 there), ``Σ z``, the best score (``z``, or
        ``z / T + g`` when sampling; the gold id left out under ``disallow_correct``) and its global id (lowest on
        ties).  Rows labelled ``ignore_index``: zeros, best −inf, id ``vocab_all`` (as the native op: no −inf − −inf
        when the ranks' maxima are combined).
    Raises:
        ValueError (CPU) / a device-side assert (CUDA): labels outside ``[0, vocab_all)``, row ids outside
        ``[0, 2^32)``; ValueError: a block outside ``[0, vocab_all)``.
    """
    _check_head(hidden, weight, bias, labels=labels, row_ids=row_ids)
    bias, labels, row_ids = map(_flat, (bias, labels, row_ids))
    n = hidden.shape[0]
    has_weight = weight is not None
    vocab, width = (weight.shape[0], hidden.shape[1]) if has_weight else (hidden.shape[1], 16)
    if not (0 <= v_offset and v_offset + vocab <= vocab_all):
        raise ValueError(f"v_offset: expected the block [v_offset, v_offset + {vocab}) inside [0, {vocab_all}) "
                         f"(vocab_all), got v_offset={v_offset}")
    _check_lengths(labels=(labels, n), row_ids=(row_ids, n), bias=(bias, vocab))
    cfg = config or head_config(n, vocab, width, hidden.device, hidden.dtype, logits=not has_weight)
    v_per_split = triton.cdiv(triton.cdiv(vocab, cfg.splits), cfg.block_v) * cfg.block_v
    splits = triton.cdiv(vocab, v_per_split)
    dev = hidden.device
    flags = _new_flags(dev)
    live = labels != ignore_index
    part = [torch.zeros((splits, n), dtype=torch.float32, device=dev) for _ in range(5)]  # max other gold best zsum
    part_idx = torch.zeros((splits, n), dtype=torch.int32, device=dev)
    w, (stride_wv, stride_we) = (weight, weight.stride()) if has_weight else (hidden, (0, 0))
    sample, scored = prediction == "sample", prediction == "sample" or disallow_correct
    kernels._mlm_fwd_kernel[(triton.cdiv(n, cfg.block_n), splits)](
        hidden, w, bias if bias is not None else hidden, labels, rows_first(live),
        row_ids if row_ids is not None else labels, *part, part_idx, part_idx, flags,
        n, vocab, width, hidden.stride(0), hidden.stride(1), stride_wv, stride_we,
        philox_seed(seed), float(temperature), ignore_index, v_per_split, v_offset, vocab_all,
        HAS_WEIGHT=has_weight, HAS_BIAS=bias is not None, SAMPLE=sample, DISALLOW=disallow_correct,
        HAS_ROW_IDS=row_ids is not None, COUNT_TILES=False, SHARDED=True,
        BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v, BLOCK_E=cfg.block_e,
        DOT_PRECISION=_dot_precision(hidden.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    raise_flagged(flags, _messages(vocab_all, ignore_index),
                  (kernels.BAD_ORDER, kernels.BAD_LABELS) + ((kernels.BAD_ROW_IDS,) if row_ids is not None else ()))
    part_max, part_other, part_gold, part_best, part_zsum = part
    top = part_max.max(0).values
    shift = torch.where(top == float("-inf"), 0.0, top)
    other = (part_other * torch.exp(part_max - shift)).nan_to_num(0.0).sum(0)
    local_gold = labels - v_offset
    own = live & (local_gold >= 0) & (local_gold < vocab)
    gold_split = torch.where(own, local_gold, 0) // v_per_split
    gold_logit = torch.where(own, part_gold.gather(0, gold_split[None]).squeeze(0), 0.0)
    scores = part_best if scored else part_max  # argmax: the kernel's best score is the running max
    best = scores.max(0).values
    ids = torch.where(scores == best, part_idx.long(), vocab).min(0).values  # lowest id among the splits' winners
    stats = torch.stack([top, other, gold_logit, part_zsum.sum(0), best])
    stats = torch.where(live, stats, torch.tensor([[0.0], [0.0], [0.0], [0.0], [float("-inf")]], device=dev))
    return stats, torch.where(live, ids + v_offset, vocab_all)
