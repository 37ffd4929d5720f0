"""Fused LM head + MLM cross-entropy + hard correction + Gumbel-max sampling + SR cosine: the launchers of the
kernels in ``mlm_head_kernels.py``.

``mlm_head_forward`` returns per-row statistics (NLL, log-sum-exp, mean logit, ``1 - p(gold)``, prediction,
corrected, SR and its cosine terms); ``mlm_head_backward`` (coefficients α, γ, δ per row: ``dz = α·softmax -
γ·onehot(gold) - δ/V``) and ``sr_backward`` turn per-row coefficients into gradients.  ``tnops::mlm_head``
(``tnops/_ops.py``, through ``tnops/backends/triton.py``) is their one caller in production; the loss is composed
from the statistics there with ordinary tensor ops, so nothing here synchronises with the host.

Inputs of any layout are read correctly: the 2-D operands (hidden, weight, SR table) through their strides,
stride 0 included; the 1-D ones (bias, labels, row ids, CSR table, per-row statistics) are made contiguous
here (an O(N + V + nnz) copy, only when they are not).  The kernels write only into buffers allocated here,
never into an input, so an expanded (stride-0) input gets a dense gradient that autograd reduces.
Dtypes the kernels cannot compute are refused first (``config.check_inputs``), and 1-D inputs of the wrong
length (shapes only: no host sync).

Given logits: ``weight=None`` makes ``hidden`` the ``[N, V]`` logits (``mlm_loss``); the kernels read them
through their strides and ``mlm_head_backward`` returns ``d_logits`` in their dtype.

Every launcher runs under its inputs' device (``config.on_inputs_device``: ``torch.cuda.device(hidden.device)``), so
tensors on ``cuda:1`` work while ``cuda:0`` is current; tensors on two devices are refused, naming the argument,
before any kernel runs (``config.check_inputs``).

Index values are checked by the kernels themselves (see ``mlm_head_kernels``): each call gets int32 error flags,
one per argument kind; after the kernels, on CPU (the interpreter) a set flag raises ``ValueError`` naming the
argument and its range, on CUDA ``torch._assert_async`` turns it into a device-side assert without a host sync.
"""
from __future__ import annotations

import torch
import triton

from tnops.losses import COSINE_EPS
from tnops.ops import mlm_head_kernels as kernels
from tnops.ops import sr_kernels
from tnops.ops.config import check_inputs, head_config, on_inputs_device

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
    if weight is None and bias is not None:
        raise ValueError("bias: given logits (weight=None) take no bias")
    if weight is not None and hidden.dtype != weight.dtype:
        raise TypeError(f"hidden and weight: the Triton kernels need one dtype, got {hidden.dtype} and {weight.dtype}")


def _check_lengths(**sizes: tuple[torch.Tensor | None, int]) -> None:
    """Each given tensor has the number of entries the kernels index it with (a shape check: no host sync)."""
    for name, (tensor, size) in sizes.items():
        if tensor is not None and tensor.shape[0] != size:
            raise ValueError(f"{name}: expected {size} entries (rows), got shape {tuple(tensor.shape)}")


def _messages(vocab: int, ignore_index: int | None = None, nnz: int = 0) -> dict[int, str]:
    """What each error flag means, as the ValueError (CPU) or device assert (CUDA) says it."""
    gold = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
    return {
        kernels.BAD_LABELS.value: f"labels: expected ids in [0, {vocab}){gold}",
        kernels.BAD_ROW_IDS.value: "row_ids: expected values in [0, 2^32) (they key a 32-bit Philox counter word)",
        kernels.BAD_ORDER.value: "order: the row permutation holds an index outside [0, N) (internal error)",
        kernels.BAD_OFFSETS.value: "offsets: expected a CSR table with 0 <= offsets[g] <= offsets[g + 1] <= "
                                   f"nnz = {nnz} for every gold id g",
        kernels.BAD_SYN_IDS.value: f"syn_ids: expected synonym ids in [0, {vocab})",
        kernels.BAD_PREDICTIONS.value: f"predictions: expected ids in [0, {vocab}) on rows with a gold id",
    }


def _new_flags(device) -> torch.Tensor:
    return torch.zeros(kernels.NUM_FLAGS, dtype=torch.int32, device=device)


def raise_flagged(flags: torch.Tensor, messages: dict[int, str], slots) -> None:
    """Raise for the flags among ``slots`` (those the kernels could set) that are set: ValueError on CPU, a
    device-side assert on CUDA (async: no host sync; one comparison, then one assert per slot)."""
    messages = {slot.value: messages[slot.value] for slot in slots}
    if flags.device.type == "cuda":
        clear = flags == 0
        for slot, message in messages.items():
            torch._assert_async(clear[slot], message)
        return
    values = flags.tolist()
    bad = [message for slot, message in messages.items() if values[slot]]
    if bad:
        raise ValueError("; ".join(bad))


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 must not silently become TF32: the fused path promises 1e-5 relative agreement in fp32.
    return "ieee" if dtype == torch.float32 else "tf32"


@on_inputs_device
def mlm_head_forward(hidden, weight, bias, labels, *, offsets=None, syn_ids=None, sr_embedding=None,
                     prediction="argmax", temperature=1.0, disallow_correct=False, seed=0, ignore_index=-100,
                     row_ids=None, config=None, tile_counter=None):
    """Run the forward kernels.

    Args:
        hidden: ``[N, E]``; weight: ``[V, E]``; bias: ``[V]`` or None; labels: int64 ``[N]``.
            ``weight=None``: ``hidden`` is the ``[N, V]`` logits (no bias).
        offsets, syn_ids: int32 CSR synonym table ``[V+1]``, ``[nnz]`` on the same device, or None.
        sr_embedding: ``[V, E']`` or None (no SR).
        row_ids: int64 ``[N]`` Philox row keys, or None for ``arange(N)``.
        config: a ``HeadConfig`` (None: heuristic).
        tile_counter: int32 ``[1]`` or None; tests pass one to count the programs that did work.
    Returns:
        dict of ``[N]`` tensors, the float ones fp32 and 0 on unmasked rows (label ``ignore_index``): lse, nll
        (``lse - z_gold``, ``log1p`` of the non-gold sum on confident rows; corrected rows included), zmean
        (``Σ_v z_v / V``, bias included), gold_complement (``1 - p(gold)`` summed over the other ids:
        ``mlm_head_backward``'s exact gold entry), predictions (int64), corrected (bool), and with SR: sr, sr_dot,
        sr_gold_sq, sr_pred_sq.
    Raises:
        ValueError (CPU) / a device-side assert (CUDA): labels, row ids or the CSR table out of range.
    """
    _check_head(hidden, weight, bias, sr_embedding=sr_embedding, labels=labels, row_ids=row_ids, offsets=offsets,
                syn_ids=syn_ids)
    bias, labels, row_ids, offsets, syn_ids = map(_flat, (bias, labels, row_ids, offsets, syn_ids))
    seed = philox_seed(seed)
    n = hidden.shape[0]
    has_weight = weight is not None
    vocab, width = (weight.shape[0], hidden.shape[1]) if has_weight else (hidden.shape[1], 16)
    has_table = offsets is not None and syn_ids is not None and syn_ids.numel() > 0
    _check_lengths(labels=(labels, n), row_ids=(row_ids, n), bias=(bias, vocab),
                   offsets=(offsets if has_table else None, vocab + 1),
                   sr_embedding=(sr_embedding, vocab))
    cfg = config or head_config(n, vocab, width, hidden.device, hidden.dtype, logits=not has_weight)
    v_per_split = triton.cdiv(triton.cdiv(vocab, cfg.splits), cfg.block_v) * cfg.block_v
    splits = triton.cdiv(vocab, v_per_split)
    dev = hidden.device
    flags = _new_flags(dev)
    part = [torch.empty((splits, n), dtype=torch.float32, device=dev) for _ in range(5)]  # max other gold best zsum
    part_idx = torch.empty((splits, n), dtype=torch.int32, device=dev)
    grid = (triton.cdiv(n, cfg.block_n), splits)
    w, (stride_wv, stride_we) = (weight, weight.stride()) if has_weight else (hidden, (0, 0))
    kernels._mlm_fwd_kernel[grid](
        hidden, w, bias if bias is not None else hidden, labels, rows_first(labels != ignore_index),
        row_ids if row_ids is not None else labels, *part, part_idx,
        tile_counter if tile_counter is not None else part_idx, flags,
        n, vocab, width, hidden.stride(0), hidden.stride(1), stride_wv, stride_we,
        seed, float(temperature), ignore_index, v_per_split, 0, vocab,
        HAS_WEIGHT=has_weight, HAS_BIAS=bias is not None, SAMPLE=prediction == "sample", DISALLOW=disallow_correct,
        HAS_ROW_IDS=row_ids is not None, COUNT_TILES=tile_counter is not None, SHARDED=False,
        BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v, BLOCK_E=cfg.block_e,
        DOT_PRECISION=_dot_precision(hidden.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    out = {name: torch.empty(n, dtype=torch.float32, device=dev) for name in ("lse", "nll", "zmean", "gold_complement")}
    out["predictions"] = torch.empty(n, dtype=torch.int64, device=dev)
    corrected = torch.empty(n, dtype=torch.int8, device=dev)
    has_sr = sr_embedding is not None
    for name in ("sr", "sr_dot", "sr_gold_sq", "sr_pred_sq"):
        out[name] = torch.empty(n, dtype=torch.float32, device=dev) if has_sr else out["lse"]
    emb = sr_embedding if has_sr else hidden
    sr_width = emb.shape[1] if has_sr else 1
    nnz = syn_ids.shape[0] if has_table else 0
    kernels._mlm_combine_kernel[(triton.cdiv(n, cfg.row_block_n),)](
        *part, part_idx, labels, offsets if has_table else labels, syn_ids if has_table else labels, emb,
        out["lse"], out["nll"], out["zmean"], out["gold_complement"], out["predictions"], corrected, out["sr"],
        out["sr_dot"], out["sr_gold_sq"], out["sr_pred_sq"], flags, n, vocab, nnz, splits, v_per_split, sr_width,
        emb.stride(0), emb.stride(1), ignore_index, COSINE_EPS**2, HAS_TABLE=has_table, SEARCH_STEPS=SEARCH_STEPS,
        HAS_SR=has_sr, BLOCK_N=cfg.row_block_n, BLOCK_E=cfg.row_block_e, num_warps=4)
    raise_flagged(flags, _messages(vocab, ignore_index, nnz),
                  (kernels.BAD_ORDER, kernels.BAD_LABELS) + ((kernels.BAD_ROW_IDS,) if row_ids is not None else ())
                  + ((kernels.BAD_OFFSETS, kernels.BAD_SYN_IDS) if has_table else ()))
    out["corrected"] = corrected.bool()
    return out


@on_inputs_device
def mlm_head_backward(hidden, weight, bias, labels, lse, coef, *, gold_complement=None, want=(True, True, True),
                      ignore_index=-100, config=None, tile_counter=None, v_offset=0, vocab_all=None):
    """Gradients w.r.t. hidden, weight, bias (fp32 accumulators) of the per-row logit gradients
    ``dz_r = α_r · softmax(z_r) - γ_r · onehot(gold_r) - δ_r / V``.

    Args:
        hidden ``[N, E]``, weight ``[V, E]``, bias ``[V]`` or None, labels int64 ``[N]``, lse fp32 ``[N]``,
        coef fp32 ``[3, N]``: the rows α, γ, δ (a row whose three are 0 gets no work, and nothing from NaN or
        inf there; rows labelled ``ignore_index`` get no gradient either);
        gold_complement: fp32 ``[N]`` ``1 - p(gold)`` from ``mlm_head_forward``: the gold entry of ``dz`` is
        then ``-α · complement + (α - γ) - δ/V``; or None: ``α · (exp(z_gold - lse) - 1) + (α - γ) - δ/V``, whose
        first term cancels to 0 on a confident row (p(gold) → 1);
        want: which of (dh, dW, db) to compute; tile_counter: as in ``mlm_head_forward`` (counts tiles that did
        work).  ``weight=None``: ``hidden`` is the ``[N, V]`` logits and ``dh`` is ``d_logits``.
        v_offset, vocab_all: vocabulary parallelism: the head (or logits) holds ids ``[v_offset, v_offset + V)``
        of ``vocab_all``; labels are global ids, ``lse`` and ``gold_complement`` the whole row's, and ``δ``
        divides by ``vocab_all`` (None: one process, ``V``).
    Returns:
        ``(dh [N, E] | None, dW [V, E] | None, db [V] | None)``, float32; given logits: ``(d_logits [N, V] in
        the logits' dtype | None, None, None)``.
    Raises:
        ValueError (CPU) / a device-side assert (CUDA): a label with a gradient outside ``[0, V)``.
    """
    _check_head(hidden, weight, bias, labels=labels, lse=lse, coef=coef, gold_complement=gold_complement)
    bias, labels, lse, coef, gold_complement = map(_flat, (bias, labels, lse, coef, gold_complement))
    n = hidden.shape[0]
    has_weight = weight is not None
    vocab, width = (weight.shape[0], hidden.shape[1]) if has_weight else (hidden.shape[1], 16)
    _check_lengths(labels=(labels, n), lse=(lse, n), bias=(bias, vocab), gold_complement=(gold_complement, n))
    if tuple(coef.shape) != (3, n):
        raise ValueError(f"coef: expected shape (3, {n}) (rows alpha, gamma, delta), got {tuple(coef.shape)}")
    coef = coef.to(torch.float32)  # contiguous [3, N] (from _flat): the kernel reads row k at coef + k·N
    cfg = config or head_config(n, vocab, width, hidden.device, hidden.dtype, logits=not has_weight)
    sharded, kernel_ignore, bad_labels = vocab_all is not None, ignore_index, None
    if sharded:  # the kernel reads this block's indices: V where the gold id is another block's, -1 on ignored rows
        gold = labels != ignore_index
        bad_labels = gold & ((coef != 0).any(0)) & ((labels < 0) | (labels >= vocab_all))
        local = labels - v_offset
        local = torch.where((local >= 0) & (local < vocab), local, vocab)
        labels, kernel_ignore = torch.where(gold & ~bad_labels, local, -1), -1
    want_dh, want_dw, want_db = want[0], want[1] and has_weight, want[2] and bias is not None
    dev = hidden.device
    if has_weight:
        dh = torch.zeros((n, width), dtype=torch.float32, device=dev) if want_dh else None
    else:  # the kernel writes every element of d_logits
        dh = torch.empty((n, vocab), dtype=hidden.dtype, device=dev) if want_dh else None
    dw = torch.zeros((vocab, width), dtype=torch.float32, device=dev) if want_dw else None
    db = torch.zeros(vocab, dtype=torch.float32, device=dev) if want_db else None
    if want_dh or want_dw or want_db:
        flags = _new_flags(dev)
        if bad_labels is not None:  # flagged here, without a host sync (the kernel skips those rows)
            flags[kernels.BAD_LABELS.value] = bad_labels.any().to(torch.int32)
        grid = (triton.cdiv(n, cfg.bwd_block_n) * triton.cdiv(vocab, cfg.bwd_block_v),)
        dummy = lse
        w, (stride_wv, stride_we) = (weight, weight.stride()) if has_weight else (hidden, (0, 0))
        kernels._mlm_bwd_kernel[grid](
            hidden, w, bias if bias is not None else hidden, labels, rows_first((coef != 0).any(0)), lse,
            gold_complement if gold_complement is not None else lse, coef,
            dh if want_dh else dummy, dw if want_dw else dummy, db if want_db else dummy,
            tile_counter if tile_counter is not None else lse, flags,
            n, vocab, width, hidden.stride(0), hidden.stride(1), stride_wv, stride_we, kernel_ignore,
            vocab if vocab_all is None else vocab_all, HAS_WEIGHT=has_weight, HAS_BIAS=bias is not None,
            HAS_COMPLEMENT=gold_complement is not None, SHARDED=sharded, WANT_DH=want_dh,
            WANT_DW=want_dw, WANT_DB=want_db,
            COUNT_TILES=tile_counter is not None, BLOCK_N=cfg.bwd_block_n, BLOCK_V=cfg.bwd_block_v,
            BLOCK_E=cfg.bwd_block_e, GROUP_N=cfg.bwd_group_n,
            DOT_PRECISION=_dot_precision(hidden.dtype), num_warps=cfg.bwd_num_warps, num_stages=cfg.num_stages)
        raise_flagged(flags, _messages(vocab if vocab_all is None else vocab_all, ignore_index),
                      (kernels.BAD_ORDER, kernels.BAD_LABELS))
    return dh, dw, db


@on_inputs_device
def sr_backward(sr_embedding, labels, predictions, coef, dot, gold_sq, pred_sq, *, ignore_index=-100, config=None):
    """SR gradient ``[V, E']`` (fp32) scatter-added into the rows of gold and predicted tokens.

    Raises:
        ValueError (CPU) / a device-side assert (CUDA): on rows with a gold id and a gradient, a label or a
        prediction outside ``[0, V)``.
    """
    check_inputs(sr_embedding=sr_embedding, labels=labels, predictions=predictions, coef=coef, dot=dot, gold_sq=gold_sq,
                 pred_sq=pred_sq)
    labels, predictions, coef, dot, gold_sq, pred_sq = map(_flat, (labels, predictions, coef, dot, gold_sq, pred_sq))
    n = labels.shape[0]
    vocab, width = sr_embedding.shape
    _check_lengths(predictions=(predictions, n), coef=(coef, n), dot=(dot, n), gold_sq=(gold_sq, n),
                   pred_sq=(pred_sq, n))
    cfg = config or head_config(n, vocab, width, sr_embedding.device, sr_embedding.dtype)
    demb = torch.zeros((vocab, width), dtype=torch.float32, device=sr_embedding.device)
    flags = _new_flags(sr_embedding.device)
    sr_kernels._sr_bwd_kernel[(triton.cdiv(n, cfg.row_block_n),)](
        sr_embedding, labels, predictions, coef, dot, gold_sq, pred_sq, demb, flags, n, vocab, width,
        sr_embedding.stride(0), sr_embedding.stride(1), ignore_index, COSINE_EPS**2,
        BLOCK_N=cfg.row_block_n, BLOCK_E=cfg.row_block_e, num_warps=4)
    raise_flagged(flags, _messages(vocab, ignore_index), (kernels.BAD_LABELS, kernels.BAD_PREDICTIONS))
    return demb
