"""Vocabulary-parallel true-negative loss: ``linear_mlm_loss(..., process_group=group)`` (issue 19).

Each rank holds a contiguous block of the LM head's vocabulary rows (``weight [V_k, E]``, ``bias [V_k]``), blocks in
rank order, any sizes; ``hidden``, ``labels``, ``row_ids``, the seed and the synonym table are the same on every
rank.  Every rank returns what one process returns for the concatenated weight: loss, predictions (global ids,
Gumbel noise keyed by the global vocabulary id, so samples are bit for bit one process's), corrected flags, and the
gradients: ``hidden.grad`` whole, ``weight.grad``/``bias.grad`` the shard's slice.

How (Megatron's vocabulary-parallel CE, extended to the row contract of ``tnops/_ops.py``): per chunk of rows each
rank forms its shard's logits and per-row partial statistics — max, Σ exp over the non-gold ids, the gold logit
where the gold id is its own, Σ z, the best noisy score and its global id — and a few all-reduces of ``[N]``
vectors give the global ``lse``, ``nll = lse − z_gold`` (exact on confident rows: 1 − p(gold) summed apart),
``zmean`` and the prediction (largest score, lowest id on ties).  Hard correction then looks the prediction up in
the global table, and the loss is composed from the statistics exactly as ``tnops.functional`` composes it (label
smoothing and z-loss included).  The backward recomputes the shard's logits chunk by chunk with the global ``lse``,
forms ``dz = α·softmax − γ·onehot(gold) − δ/V`` on its ids, and all-reduces the ``[N, E]`` partial ``d hidden``.
Nothing of size N·V is gathered.  SR reads the gold and predicted rows of the (sharded) embedding through one
all-reduce of ``[N, E']``.  The kernels (``shard_backend``): the native ops on CPU where they are built (a block's
statistics in one fused pass, ``tnops::mlm_shard_stats_native``; its gradients under the global lse,
``tnops::mlm_head_native_backward`` with ``vocab_start``/``vocab_all``), the torch backend's maths elsewhere (CUDA
included); gloo on CPU, NCCL on GPU; eager.
"""
from __future__ import annotations

import functools

import torch
import torch.distributed as dist

from tnops import _ops, backends, losses, reference
from tnops import random as tn_random
from tnops.backends import native, triton_fallback
from tnops.options import MLMOptions
from tnops.outputs import MLMLossOutput


def shard_layout(rows: int, group) -> tuple[int, int]:
    """``(vocab_start, vocab_size)`` of this rank's block of ``rows`` vocabulary rows: the blocks of all ranks, in
    rank order, concatenated (one all-gather of the block sizes)."""
    sizes = [torch.zeros((), dtype=torch.int64) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor(rows, dtype=torch.int64), group=group)
    sizes = [int(s) for s in sizes]
    rank = dist.get_rank(group)
    return sum(sizes[:rank]), sum(sizes)


def from_dtensors(weight, bias, sr_embedding, process_group):
    """``(group, weight block, bias block, SR table)`` of a ``weight`` DTensor sharded by vocabulary rows
    (``Shard(0)`` on a 1-D mesh; bias and a sharded SR table alike, or plain tensors).  ``to_local`` is
    differentiable: the gradients come back as DTensors of the same placement.  Anything else is refused."""
    from torch.distributed.tensor import DTensor, Shard

    mesh = weight.device_mesh
    if mesh.ndim != 1 or tuple(weight.placements) != (Shard(0),):
        raise ValueError(f"weight: a DTensor must be sharded by vocabulary rows, placements (Shard(0),) on a 1-D "
                         f"mesh; got {tuple(weight.placements)} on a {mesh.ndim}-D mesh")
    group = mesh.get_group()
    if process_group is not None and process_group is not group:
        raise ValueError("process_group: a DTensor weight brings its own (its mesh's); pass one or the other")
    local = []
    for name, t in (("bias", bias), ("sr_embedding", sr_embedding)):
        if isinstance(t, DTensor):
            if t.device_mesh != mesh or tuple(t.placements) != (Shard(0),):
                raise ValueError(f"{name}: expected a DTensor placed like weight ((Shard(0),) on its mesh), got "
                                 f"{tuple(t.placements)}")
            t = t.to_local()
        local.append(t)
    return group, weight.to_local(), *local


def check_same_on_every_rank(group, **tensors) -> None:
    """ValueError naming the first tensor that differs between ranks (one all-reduce of a few checksums)."""
    names = list(tensors)
    sums = torch.stack([tensors[n].double().nan_to_num().sum() + tensors[n].numel() for n in names])
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    for name, lo, hi in zip(names, low.tolist(), high.tolist()):
        if lo != hi:
            raise ValueError(f"{name}: expected the same tensor on every rank of process_group (vocabulary "
                             f"parallelism shards only weight, bias and sr_embedding), got different ones")


def _all_reduce(t, op, group):
    dist.all_reduce(t, op=op, group=group)
    return t


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


def _shard_stats(kernels, hidden, weight, bias, labels, row_keys, options: MLMOptions, seed, start, vocab):
    """``(stats [5, N], best_id [N])`` of this rank's block (``_shard_stats_torch``'s layout) by ``kernels``."""
    if kernels == "native":
        rows_k = hidden.shape[1] if weight is None else weight.shape[0]
        return torch.ops.tnops.mlm_shard_stats_native(
            hidden, weight, bias, labels, row_keys, _seed_arg(seed), options.prediction == "sample",
            options.temperature, options.disallow_correct, options.ignore_index, start, vocab,
            native.chunk_rows(rows_k))
    torch_call = functools.partial(_shard_stats_torch, hidden, weight, bias, labels, row_keys, options, seed, start,
                                   vocab)
    if kernels == "torch":
        return torch_call()
    from tnops.ops.vocab_block import block_statistics

    def triton_call():
        return block_statistics(hidden, weight, bias, labels, v_offset=start, vocab_all=vocab,
                                prediction=options.prediction, temperature=options.temperature,
                                disallow_correct=options.disallow_correct, seed=seed,
                                ignore_index=options.ignore_index, row_ids=row_keys)
    if kernels == "triton":
        return triton_call()
    return triton_fallback.run_or_fall_back("mlm", hidden.device, hidden.dtype, triton_call, torch_call)


def _shard_stats_torch(hidden, weight, bias, labels, row_keys, options: MLMOptions, seed, start, vocab):
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


class _ShardStatistics(torch.autograd.Function):
    """Per-row ``nll, lse, zmean`` (differentiable) and ``predictions`` of the vocabulary-sharded head."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, row_keys, options: MLMOptions, seed, start, vocab, group, kernels):
        masked = labels != options.ignore_index
        stats, best_id = _shard_stats(kernels, hidden, weight, bias, labels, row_keys, options, seed, start, vocab)
        m_all = _all_reduce(stats[0].clone(), dist.ReduceOp.MAX, group)
        scaled = stats[1:4].clone()
        scaled[0] *= torch.exp(stats[0] - m_all)
        _all_reduce(scaled, dist.ReduceOp.SUM, group)  # other (at the global max), gold logit, Σ z
        other, z_gold, z_sum = scaled
        best = _all_reduce(stats[4].clone(), dist.ReduceOp.MAX, group)
        candidate = torch.where(stats[4] == best, best_id, vocab)
        predictions = _all_reduce(candidate, dist.ReduceOp.MIN, group)
        e_gold = torch.exp(z_gold - m_all)
        total = other + e_gold
        lse = m_all + torch.log(total)
        p_other = other / total  # 1 - p(gold), summed apart: no cancellation on confident rows
        nll = torch.where(p_other < 0.5, -torch.log1p(-p_other), lse - z_gold)
        zero = torch.zeros_like(lse)
        nll, lse, zmean = (torch.where(masked, t, zero) for t in (nll, lse, z_sum / vocab))
        predictions = torch.where(masked, predictions, options.ignore_index)
        empty = hidden.new_empty(0)
        ctx.save_for_backward(hidden, empty if weight is None else weight, empty if bias is None else bias, labels, lse,
                              p_other)
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.start, ctx.vocab, ctx.group, ctx.kernels = start, vocab, group, kernels
        ctx.ignore_index = options.ignore_index
        ctx.mark_non_differentiable(predictions)
        return nll, lse, zmean, predictions

    @staticmethod
    def backward(ctx, g_nll, g_lse, g_zmean, _g_pred):
        hidden, weight, bias, labels, lse, p_other = ctx.saved_tensors
        cdt = lse.dtype
        masked = labels != ctx.ignore_index
        zero = torch.zeros_like(lse)
        g_nll, g_lse, g_zmean = (zero if g is None else torch.where(masked, g.to(cdt), 0)
                                 for g in (g_nll, g_lse, g_zmean))
        alpha, gamma, delta = g_nll + g_lse, g_nll, -g_zmean
        kernels = ctx.kernels
        if kernels == "triton-or-torch":  # the forward's Triton launch failed here before: torch's maths
            kernels = "torch" if triton_fallback.failure("mlm", hidden.device, hidden.dtype) else "triton"
        if kernels == "triton":
            from tnops.ops.mlm_head import mlm_head_backward

            want = ctx.needs_input_grad[:3]
            grads = mlm_head_backward(hidden, weight if ctx.has_weight else None, bias if ctx.has_bias else None,
                                      labels, lse.float(), torch.stack([alpha, gamma, delta]).float(),
                                      gold_complement=p_other.float(), want=want, ignore_index=ctx.ignore_index,
                                      v_offset=ctx.start, vocab_all=ctx.vocab)
            if ctx.has_weight and grads[0] is not None:  # every rank's columns add to d hidden (fp32)
                _all_reduce(grads[0], dist.ReduceOp.SUM, ctx.group)
            d_hidden, d_weight, d_bias = (None if g is None or not w else g.to(t.dtype)
                                          for g, w, t in zip(grads, want, (hidden, weight, bias)))
            return d_hidden, d_weight, d_bias, None, None, None, None, None, None, None, None
        if kernels == "native":
            want = ctx.needs_input_grad[:3]
            d_hidden, d_weight, d_bias = (g if w else None for g, w in zip(torch.ops.tnops.mlm_head_native_backward(
                hidden, weight if ctx.has_weight else None, bias if ctx.has_bias else None, labels, lse,
                torch.stack([alpha, gamma, delta]), *want, native.chunk_rows(
                    weight.shape[0] if ctx.has_weight else hidden.shape[1]), p_other, ctx.start, ctx.vocab), want))
            if ctx.has_weight and d_hidden is not None:  # every rank's columns add to d hidden
                _all_reduce(d_hidden, dist.ReduceOp.SUM, ctx.group)
            return d_hidden, d_weight, d_bias, None, None, None, None, None, None, None, None
        rows_k = weight.shape[0] if ctx.has_weight else hidden.shape[1]
        local_gold = labels - ctx.start
        own = masked & (local_gold >= 0) & (local_gold < rows_k)
        w = weight.to(cdt) if ctx.has_weight else None
        b = bias.to(cdt) if ctx.has_bias else None
        d_hidden = torch.zeros(hidden.shape, dtype=cdt, device=hidden.device)
        d_weight = torch.zeros_like(w) if ctx.has_weight else None
        d_bias = torch.zeros(rows_k, dtype=cdt, device=hidden.device) if ctx.has_bias else None
        step = backends.chunk_rows(rows_k)
        for r0 in range(0, labels.shape[0], step):
            rows = slice(r0, r0 + step)
            live = masked[rows]
            z = _logits(hidden[rows], w, b, live, cdt)
            dz = torch.exp(z - lse[rows, None]) * alpha[rows, None] - (delta[rows] / ctx.vocab)[:, None]
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
        if w is not None:  # every rank's columns add to d hidden
            _all_reduce(d_hidden, dist.ReduceOp.SUM, ctx.group)
        return (d_hidden.to(hidden.dtype), None if w is None else d_weight.to(weight.dtype),
                None if d_bias is None else d_bias.to(bias.dtype), None, None, None, None, None, None, None, None)


def _logits(inputs, w, b, live, cdt):
    """A chunk's ``[R, V_k]`` logits in the compute dtype (rows not ``live`` selected to zeros / the bias)."""
    x = torch.where(live[:, None], inputs.to(cdt), 0)
    if w is None:
        return x
    return x @ w.T if b is None else torch.addmm(b, x, w.T)


class _ShardRows(torch.autograd.Function):
    """Rows ``ids`` of a vocabulary-sharded table (``shard`` holds ids ``[start, start + V_k)``): ``[M, E']`` on every
    rank (one all-reduce); the gradient of each row goes to the rank that owns it."""

    @staticmethod
    def forward(ctx, shard, ids, start, group):
        local = ids - start
        own = (local >= 0) & (local < shard.shape[0])
        rows = torch.where(own[:, None], shard[torch.where(own, local, 0)], 0)
        _all_reduce(rows, dist.ReduceOp.SUM, group)
        ctx.save_for_backward(local, own)
        ctx.shape = shard.shape
        return rows

    @staticmethod
    def backward(ctx, grad):
        local, own = ctx.saved_tensors
        d_shard = grad.new_zeros(ctx.shape)
        d_shard.index_add_(0, local[own], grad[own])
        return d_shard, None, None, None


def _sr_rows(sr_embedding, labels, predictions, masked, start, sharded, group):
    gold = torch.where(masked, labels, 0)
    pred = torch.where(masked, predictions, 0)
    if sharded:
        a, b = _ShardRows.apply(sr_embedding, gold, start, group), _ShardRows.apply(sr_embedding, pred, start, group)
    else:
        a, b = sr_embedding[gold], sr_embedding[pred]
    rows = reference.cosine_distance(reference.select_rows(masked, a), reference.select_rows(masked, b))
    return torch.where(masked & (gold != pred), rows, 0)


def vocab_parallel_mlm(hidden, weight, bias, labels, synonyms, sr_embedding, options: MLMOptions, row_ids,
                       group, backend: str | None = None) -> MLMLossOutput:
    """``tnops.linear_mlm_loss`` over a vocabulary-sharded head (module docstring); arguments already validated
    for one rank (shapes, dtypes, options), the cross-rank facts are checked here."""
    lead = labels.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_labels = labels.reshape(-1).long()
    start, vocab = shard_layout(hidden.shape[-1] if weight is None else weight.shape[0], group)
    same = {"labels": flat_labels} if weight is None else {"hidden": flat_hidden.detach(), "labels": flat_labels}
    check_same_on_every_rank(group, **same,
                             **({} if row_ids is None else {"row_ids": row_ids}))
    masked = flat_labels != options.ignore_index
    if bool(((flat_labels < 0) | (flat_labels >= vocab))[masked].any()):
        raise ValueError(f"labels: expected global ids in [0, {vocab}) (the concatenated vocabulary of "
                         f"process_group) or ignore_index={options.ignore_index}")
    if synonyms is not None and synonyms.vocab_size != vocab:
        raise ValueError(f"synonyms: expected a table over the global vocabulary of {vocab} tokens (the blocks of "
                         f"every rank), got one over {synonyms.vocab_size}")
    seed = 0
    if options.prediction == "sample":
        seed = options.seed
        if seed is None:  # drawn once, on the group's first rank, so every rank samples alike
            seed_t = torch.tensor(tn_random.draw_seed(), dtype=torch.int64, device=flat_hidden.device)
            dist.broadcast(seed_t, src=0 if group is None else dist.get_global_rank(group, 0), group=group)
            seed = int(seed_t)
    row_keys = torch.arange(flat_labels.numel(), device=flat_hidden.device) if row_ids is None \
        else row_ids.reshape(-1).long()
    kernels = shard_backend(flat_hidden.device, flat_hidden.dtype, backend)
    nll, lse, zmean, predictions = _ShardStatistics.apply(flat_hidden, weight, bias, flat_labels, row_keys, options,
                                                          seed, start, vocab, group, kernels)
    corrected = torch.zeros_like(masked)
    if synonyms is not None:
        corrected = masked & (predictions != flat_labels) & synonyms.to(flat_labels.device).is_synonym(
            flat_labels, predictions)
    kept = masked & ~corrected
    coefficients = options.row_coefficients()
    ce_rows = _ops.objective_rows(nll, lse, zmean, kept, (1.0, 0.0) + coefficients[2:])
    z_rows = torch.where(kept, options.z_loss * lse * lse, 0) if options.z_loss else torch.zeros_like(ce_rows)
    ce, z = (losses.reduce_rows(t, kept, options.reduction) for t in (ce_rows, z_rows))
    if options.sr_weight:
        sharded = sr_embedding.shape[0] != vocab  # else the full table
        sr = losses.reduce_rows(_sr_rows(sr_embedding, flat_labels, predictions, masked, start, sharded, group),
                                masked, options.reduction)
    else:
        sr = torch.zeros_like(ce)
    if options.reduction == "none":
        ce, sr, z = ce.reshape(lead), sr.reshape(lead), z.reshape(lead)
    return MLMLossOutput(ce + z + options.sr_weight * sr, ce, sr, predictions.reshape(lead),
                         corrected.reshape(lead), z)
