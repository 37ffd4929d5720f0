"""One rank's vocabulary block in the vocabulary-parallel loss (``tnops.distributed``): its per-row partial statistics
and its gradients, by the kernels of a backend (``shard_backend``): the native ops, the Triton kernels, or torch ops.

``block_statistics`` returns ``(stats [5, N], best_id [N])``: the block's max logit, ``Σ_{v≠gold} exp(z − max)``, the
gold logit (0 where the gold id is another block's), ``Σ z``, the best (noisy) score and its global id.
``block_backward`` returns the block's ``(d hidden, d weight, d bias)`` for per-row ``coef [3, N] = (α, γ, δ)`` under
the whole row's lse and ``1 − p(gold)`` (d hidden is this block's part: the caller all-reduces it).
"""
from __future__ import annotations

import functools

import torch

from tnops import backends, losses
from tnops import random as tn_random
from tnops.backends import native, triton_fallback
from tnops.options import MLMOptions

KERNELS = ("torch", "native", "triton")  # the backends whose kernels take a vocabulary block


def shard_backend(device: torch.device, dtype: torch.dtype, backend: str | None) -> str:
    """The kernels of the vocabulary-parallel path for these tensors: by default the device's default backend
    (``native`` on CPU where it is built; on CUDA ``triton-or-torch``: Triton, falling back to torch with one warning
    where it cannot run), else ``torch``; a named backend (``backend=`` or ``TNOPS_BACKEND``) must be one of
    ``KERNELS``."""
    if backend is None and backends.requested_backend() is None:
        name = backends.select(device, dtype)
        return name if name in KERNELS + ("triton-or-torch",) else "torch"
    name = backends.select(device, dtype, backend)
    if name not in KERNELS:
        source = "backend" if backend is not None else "TNOPS_BACKEND"
        raise ValueError(f"{source}: a vocabulary-parallel loss (process_group) runs the kernels of one of "
                         f"{', '.join(KERNELS)}; got {name!r}")
    return name


def _seed_arg(seed: int) -> int:
    return seed - 2**64 if seed >= 2**63 else seed


def block_statistics(kernels, hidden, weight, bias, labels, row_keys, options: MLMOptions, seed, start, vocab):
    """``(stats [5, N], best_id [N])`` of this rank's block (``block_statistics_torch``'s layout) by ``kernels``."""
    if kernels == "native":
        rows_k = hidden.shape[1] if weight is None else weight.shape[0]
        return torch.ops.tnops.mlm_shard_stats_native(
            hidden, weight, bias, labels, row_keys, _seed_arg(seed), options.prediction == "sample",
            options.temperature, options.disallow_correct, options.ignore_index, start, vocab,
            native.chunk_rows(rows_k))
    torch_call = functools.partial(block_statistics_torch, hidden, weight, bias, labels, row_keys, options, seed, start,
                                   vocab)
    if kernels == "torch":
        return torch_call()
    from tnops.ops import vocab_block

    def triton_call():
        return vocab_block.block_statistics(hidden, weight, bias, labels, v_offset=start, vocab_all=vocab,
                                            prediction=options.prediction, temperature=options.temperature,
                                            disallow_correct=options.disallow_correct, seed=seed,
                                            ignore_index=options.ignore_index, row_ids=row_keys)
    if kernels == "triton":
        return triton_call()
    return triton_fallback.run_or_fall_back("mlm", hidden.device, hidden.dtype, triton_call, torch_call)


def block_statistics_torch(hidden, weight, bias, labels, row_keys, options: MLMOptions, seed, start, vocab):
    """``stats [5, N]`` (the block's max, Σ_{v≠gold} exp(z − max), gold logit (0: another block's), Σ z, best score)
    and ``best_id [N]`` (global) of this rank's vocabulary block, with torch ops, chunk by chunk."""
    cdt = losses.compute_dtype(hidden.dtype)
    n = labels.shape[0]
    rows_k = hidden.shape[1] if weight is None else weight.shape[0]  # weight None: hidden is [N, V_k] logits
    device = hidden.device
    masked = labels != options.ignore_index
    local_gold = labels - start
    own = masked & (local_gold >= 0) & (local_gold < rows_k)
    stats = torch.zeros(5, n, dtype=cdt, device=device)  # max, other, gold logit, Σ z, best score
    best_id = torch.full((n,), vocab, dtype=torch.int64, device=device)
    w = None if weight is None else weight.to(cdt)
    b = None if bias is None else bias.to(cdt)
    step = backends.chunk_rows(rows_k)
    for r0 in range(0, n, step):
        rows = slice(r0, r0 + step)
        z = _logits(hidden[rows], w, b, masked[rows], cdt)
        gold = torch.where(own[rows], local_gold[rows], 0)
        m = z.max(1).values
        e = torch.exp(z - m[:, None])
        e_gold = e.gather(1, gold[:, None]).squeeze(1)
        stats[0, rows], stats[3, rows] = m, z.sum(1)
        e.scatter_(1, gold[:, None], torch.where(own[rows], 0, e_gold)[:, None])  # the gold id summed apart
        stats[1, rows] = e.sum(1)
        stats[2, rows] = torch.where(own[rows], z.gather(1, gold[:, None]).squeeze(1), 0)
        scores = z
        if options.prediction == "sample":
            noise = tn_random.gumbel(seed, row_keys[rows], vocab, start, start + rows_k).to(cdt)
            scores = z / options.temperature + noise
        if options.disallow_correct:
            scores = torch.where(own[rows, None] & (torch.arange(rows_k, device=device) == gold[:, None]),
                                 float("-inf"), scores)
        best, index = scores.max(1)
        stats[4, rows], best_id[rows] = best, index + start
    return stats, best_id


def block_backward(kernels, hidden, weight, bias, labels, lse, p_other, coef, want, ignore_index, start, vocab):
    """``(d hidden, d weight, d bias)`` of this rank's block (d hidden not yet all-reduced), by ``kernels``;
    ``coef [3, N]`` the rows' (α, γ, δ); fp32/fp64 or the inputs' dtypes."""
    if kernels == "triton":
        from tnops.ops.mlm_head import mlm_head_backward

        return mlm_head_backward(hidden, weight, bias, labels, lse.float(), coef.float(),
                                 gold_complement=p_other.float(), want=want, ignore_index=ignore_index,
                                 v_offset=start, vocab_all=vocab)
    if kernels == "native":
        return tuple(g if w else None for g, w in zip(torch.ops.tnops.mlm_head_native_backward(
            hidden, weight, bias, labels, lse, coef, *want,
            native.chunk_rows(hidden.shape[1] if weight is None else weight.shape[0]), p_other, start,
            vocab), want))
    return block_backward_torch(hidden, weight, bias, labels, lse, coef, ignore_index, start, vocab)


def block_backward_torch(hidden, weight, bias, labels, lse, coef, ignore_index, start, vocab):
    """``block_backward`` with torch ops, chunk by chunk."""
    alpha, gamma, delta = coef
    cdt = lse.dtype
    masked = labels != ignore_index
    rows_k = hidden.shape[1] if weight is None else weight.shape[0]
    local_gold = labels - start
    own = masked & (local_gold >= 0) & (local_gold < rows_k)
    w = None if weight is None else weight.to(cdt)
    b = None if bias is None else bias.to(cdt)
    d_hidden = torch.zeros(hidden.shape, dtype=cdt, device=hidden.device)
    d_weight = None if w is None else torch.zeros_like(w)
    d_bias = None if b is None else torch.zeros(rows_k, dtype=cdt, device=hidden.device)
    step = backends.chunk_rows(rows_k)
    for r0 in range(0, labels.shape[0], step):
        rows = slice(r0, r0 + step)
        live = masked[rows]
        z = _logits(hidden[rows], w, b, live, cdt)
        dz = torch.exp(z - lse[rows, None]) * alpha[rows, None] - (delta[rows] / vocab)[:, None]
        gold = torch.where(own[rows], local_gold[rows], 0)
        dz.scatter_add_(1, gold[:, None], torch.where(own[rows], -gamma[rows], 0)[:, None])
        dz = torch.where(live[:, None], dz, 0)
        if w is None:  # given logits: d logits is dz itself, this rank's columns
            d_hidden[rows] = dz
            continue
        d_hidden[rows] = dz @ w
        d_weight.addmm_(dz.T, torch.where(live[:, None], hidden[rows].to(cdt), 0))
        if d_bias is not None:
            d_bias += dz.sum(0)
    return d_hidden, d_weight, d_bias


def _logits(inputs, w, b, live, cdt):
    """A chunk's ``[R, V_k]`` logits in the compute dtype (rows not ``live`` selected to zeros / the bias)."""
    x = torch.where(live[:, None], inputs.to(cdt), 0)
    if w is None:
        return x
    return x @ w.T if b is None else torch.addmm(b, x, w.T)
