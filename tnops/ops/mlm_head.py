"""Fused LM head + MLM cross-entropy + hard correction + Gumbel-max sampling + SR cosine: the launchers of the
kernels in ``mlm_head_kernels.py``.

``mlm_head_forward`` returns per-row values (CE, log-sum-exp, prediction, corrected, SR and its cosine terms);
``mlm_head_backward`` and ``sr_backward`` turn per-row coefficients into gradients.  ``tnops::mlm_head``
(``tnops/_ops.py``, through ``tnops/backends/triton.py``) is their one caller in production; the reduction (mean
over kept rows, sum, none) is done there with ordinary tensor ops, so nothing here synchronises with the host.

Inputs of any layout are read correctly: the 2-D operands (hidden, weight, SR table) through their strides,
stride 0 included; the 1-D ones (bias, labels, row ids, CSR table, per-row statistics) are made contiguous
here (an O(N + V + nnz) copy, only when they are not).  The kernels write only into buffers allocated here,
never into an input, so an expanded (stride-0) input gets a dense gradient that autograd reduces.
Dtypes the kernels cannot compute are refused first (``config.check_inputs``).
"""
from __future__ import annotations

import torch
import triton

from tnops.losses import COSINE_EPS
from tnops.ops import mlm_head_kernels as kernels
from tnops.ops.config import check_inputs, head_config

SEARCH_STEPS = 32  # binary-search steps over one CSR row: enough for any row of < 2^32 synonyms


def rows_first(live: torch.Tensor) -> torch.Tensor:
    """int64 ``[N]`` permutation listing the ``live`` rows first (in order), then the rest.

    The kernels read their rows through it, so dead rows (unmasked, or without a gradient) fill whole row
    blocks that exit at once, however they are scattered in the batch.  A stable sort: no host sync.
    """
    return torch.argsort((~live).to(torch.int8), stable=True)


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    """A 1-D tensor the kernels may index as ``ptr + i``: contiguous (a copy only when it is not)."""
    return None if t is None else t.contiguous()


def philox_seed(seed) -> int:
    """The kernels' seed argument: ``int(seed) mod 2^64`` as a signed int64 with the same 64 bits.

    Triton's Philox casts the seed to uint64 (sign-extending a 32-bit argument) and keys on its
    ``(lo, hi)`` words, the key ``tnops.random`` uses; the signed view keeps every seed in the int64
    kernel binary instead of a uint64 one, and accepts numpy integers.
    """
    seed = int(seed) % 2**64
    return seed - 2**64 if seed >= 2**63 else seed


def _check_head(hidden, weight, bias, **more):
    check_inputs(hidden=hidden, weight=weight, bias=bias, **more)
    if hidden.dtype != weight.dtype:
        raise TypeError(f"hidden and weight: the Triton kernels need one dtype, got {hidden.dtype} and {weight.dtype}")


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 must not silently become TF32: the fused path promises 1e-5 relative agreement in fp32.
    return "ieee" if dtype == torch.float32 else "tf32"


def mlm_head_forward(hidden, weight, bias, labels, *, offsets=None, syn_ids=None, sr_embedding=None,
                     prediction="argmax", temperature=1.0, disallow_correct=False, seed=0, ignore_index=-100,
                     row_ids=None, config=None, tile_counter=None):
    """Run the forward kernels.

    Args:
        hidden: ``[N, E]``; weight: ``[V, E]``; bias: ``[V]`` or None; labels: int64 ``[N]``.
        offsets, syn_ids: int32 CSR synonym table ``[V+1]``, ``[nnz]`` on the same device, or None.
        sr_embedding: ``[V, E']`` or None (no SR).
        row_ids: int64 ``[N]`` Philox row keys, or None for ``arange(N)``.
        config: a ``HeadConfig`` (None: heuristic).
        tile_counter: int32 ``[1]`` or None; tests pass one to count the programs that did work.
    Returns:
        dict of ``[N]`` tensors: lse, loss (fp32, 0 unless kept), predictions (int64), corrected (bool),
        and with SR: sr, sr_dot, sr_gold_sq, sr_pred_sq (fp32).
    """
    _check_head(hidden, weight, bias, sr_embedding=sr_embedding)
    bias, labels, row_ids, offsets, syn_ids = map(_flat, (bias, labels, row_ids, offsets, syn_ids))
    seed = philox_seed(seed)
    n, width = hidden.shape
    vocab = weight.shape[0]
    cfg = config or head_config(n, vocab, width, hidden.device, hidden.dtype)
    v_per_split = triton.cdiv(triton.cdiv(vocab, cfg.splits), cfg.block_v) * cfg.block_v
    splits = triton.cdiv(vocab, v_per_split)
    dev = hidden.device
    part = [torch.empty((splits, n), dtype=torch.float32, device=dev) for _ in range(4)]
    part_idx = torch.empty((splits, n), dtype=torch.int32, device=dev)
    grid = (triton.cdiv(n, cfg.block_n), splits)
    kernels._mlm_fwd_kernel[grid](
        hidden, weight, bias if bias is not None else hidden, labels, rows_first(labels != ignore_index),
        row_ids if row_ids is not None else labels, *part, part_idx,
        tile_counter if tile_counter is not None else part_idx,
        n, vocab, width, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        seed, float(temperature), ignore_index, v_per_split,
        HAS_BIAS=bias is not None, SAMPLE=prediction == "sample", DISALLOW=disallow_correct,
        HAS_ROW_IDS=row_ids is not None, COUNT_TILES=tile_counter is not None,
        BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v, BLOCK_E=cfg.block_e,
        DOT_PRECISION=_dot_precision(hidden.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    out = {name: torch.empty(n, dtype=torch.float32, device=dev) for name in ("lse", "loss")}
    out["predictions"] = torch.empty(n, dtype=torch.int64, device=dev)
    corrected = torch.empty(n, dtype=torch.int8, device=dev)
    has_sr = sr_embedding is not None
    for name in ("sr", "sr_dot", "sr_gold_sq", "sr_pred_sq"):
        out[name] = torch.empty(n, dtype=torch.float32, device=dev) if has_sr else out["lse"]
    has_table = offsets is not None and syn_ids is not None and syn_ids.numel() > 0
    emb = sr_embedding if has_sr else hidden
    sr_width = emb.shape[1] if has_sr else 1
    kernels._mlm_combine_kernel[(triton.cdiv(n, cfg.row_block_n),)](
        *part, part_idx, labels, offsets if has_table else labels, syn_ids if has_table else labels, emb,
        out["lse"], out["loss"], out["predictions"], corrected, out["sr"], out["sr_dot"], out["sr_gold_sq"],
        out["sr_pred_sq"], n, splits, sr_width, emb.stride(0), emb.stride(1), ignore_index, COSINE_EPS**2,
        HAS_TABLE=has_table, SEARCH_STEPS=SEARCH_STEPS, HAS_SR=has_sr,
        BLOCK_N=cfg.row_block_n, BLOCK_E=cfg.row_block_e, num_warps=4)
    out["corrected"] = corrected.bool()
    return out


def mlm_head_backward(hidden, weight, bias, labels, lse, coef, *, want=(True, True, True), config=None,
                      tile_counter=None):
    """Gradients of ``Σ coef[row] · (lse - z_gold)`` w.r.t. hidden, weight, bias (fp32 accumulators).

    Args:
        hidden ``[N, E]``, weight ``[V, E]``, bias ``[V]`` or None, labels int64 ``[N]``, lse fp32 ``[N]``,
        coef fp32 ``[N]`` (0 for rows without gradient); want: which of (dh, dW, db) to compute;
        tile_counter: as in ``mlm_head_forward`` (counts tiles that did work).
    Returns:
        ``(dh [N, E] | None, dW [V, E] | None, db [V] | None)``, float32.
    """
    _check_head(hidden, weight, bias)
    bias, labels, lse, coef = map(_flat, (bias, labels, lse, coef))
    n, width = hidden.shape
    vocab = weight.shape[0]
    cfg = config or head_config(n, vocab, width, hidden.device, hidden.dtype)
    want_dh, want_dw, want_db = want[0], want[1], want[2] and bias is not None
    dh = torch.zeros((n, width), dtype=torch.float32, device=hidden.device) if want_dh else None
    dw = torch.zeros((vocab, width), dtype=torch.float32, device=hidden.device) if want_dw else None
    db = torch.zeros(vocab, dtype=torch.float32, device=hidden.device) if want_db else None
    if want_dh or want_dw or want_db:
        grid = (triton.cdiv(n, cfg.bwd_block_n) * triton.cdiv(vocab, cfg.bwd_block_v),)
        dummy = lse
        kernels._mlm_bwd_kernel[grid](
            hidden, weight, bias if bias is not None else hidden, labels, rows_first(coef != 0), lse, coef,
            dh if want_dh else dummy, dw if want_dw else dummy, db if want_db else dummy,
            tile_counter if tile_counter is not None else lse,
            n, vocab, width, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            HAS_BIAS=bias is not None, WANT_DH=want_dh, WANT_DW=want_dw, WANT_DB=want_db,
            COUNT_TILES=tile_counter is not None, BLOCK_N=cfg.bwd_block_n, BLOCK_V=cfg.bwd_block_v,
            BLOCK_E=cfg.bwd_block_e, GROUP_N=cfg.bwd_group_n,
            DOT_PRECISION=_dot_precision(hidden.dtype), num_warps=cfg.bwd_num_warps, num_stages=cfg.num_stages)
    return dh, dw, db


def sr_backward(sr_embedding, labels, predictions, coef, dot, gold_sq, pred_sq, *, ignore_index=-100, config=None):
    """SR gradient ``[V, E']`` (fp32) scatter-added into the rows of gold and predicted tokens."""
    check_inputs(sr_embedding=sr_embedding)
    labels, predictions, coef, dot, gold_sq, pred_sq = map(_flat, (labels, predictions, coef, dot, gold_sq, pred_sq))
    n = labels.shape[0]
    vocab, width = sr_embedding.shape
    cfg = config or head_config(n, vocab, width, sr_embedding.device, sr_embedding.dtype)
    demb = torch.zeros((vocab, width), dtype=torch.float32, device=sr_embedding.device)
    kernels._sr_bwd_kernel[(triton.cdiv(n, cfg.row_block_n),)](
        sr_embedding, labels, predictions, coef, dot, gold_sq, pred_sq, demb, n, width,
        sr_embedding.stride(0), sr_embedding.stride(1), ignore_index, COSINE_EPS**2,
        BLOCK_N=cfg.row_block_n, BLOCK_E=cfg.row_block_e, num_warps=4)
    return demb

