"""The implementations the benchmarks compare, in one place (``test_bench_mlm.py`` and ``memory.py`` use them).

Each case maps ``(hidden [N, E], weight [V, E], bias [V], labels [N], table)`` to a scalar loss whose
``backward()`` is timed with its forward.

* ``reference``: ``tnops.reference``, the eager spec.  It draws the Gumbel noise from the shared Philox
  stream, which is exact but, in tensor ops, slow: it is the correctness yardstick, not a fair speed one.
* ``eager``: what a user would write in plain PyTorch: logits, ``torch.rand`` Gumbel noise, argmax, HC
  mask, cross-entropy, SR.  This is the baseline that speed ratios are quoted against.
* ``tnops``: ``tnops.linear_mlm_loss`` (the Triton kernels on CUDA, the chunked torch path on CPU).
* ``torch-linear-ce``: PyTorch's own chunked ``F.linear_cross_entropy`` (plain CE only; torch ≥ 2.13).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import tnops
from tnops import reference

SR_WEIGHT = 0.5
SEED = 1


def true_negative_kwargs(table) -> dict:
    """Keyword arguments of the true-negative objective: Gumbel sampling, hard correction, SR."""
    return dict(synonyms=table, prediction="sample", seed=SEED, sr_weight=SR_WEIGHT)


def eager_true_negative(hidden, weight, bias, labels, table, temperature: float = 1.0):
    """The objective as plain PyTorch: materialised logits and torch's own RNG for the Gumbel noise."""
    logits = F.linear(hidden, weight, bias)
    with torch.no_grad():
        u = torch.rand(logits.shape, device=logits.device).clamp_(2.0**-24, 1 - 2.0**-24)
        predictions = (logits.float() / temperature - torch.log(-torch.log(u))).argmax(-1)
    return reference.mlm_loss(logits, labels, synonyms=table, sr_weight=SR_WEIGHT, sr_embedding=weight,
                              predictions=predictions).loss


def has_torch_linear_ce() -> bool:
    return hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions")


def loss_fn(impl: str, true_negative: bool, hidden, weight, bias, labels, table):
    """A zero-argument callable computing the loss of ``impl``, or None when ``impl`` cannot serve the case."""
    kw = true_negative_kwargs(table) if true_negative else {}
    if impl == "reference":
        if not true_negative:
            return None  # plain CE: the reference is exactly the eager case
        return lambda: reference.linear_mlm_loss(hidden, weight, labels, bias=bias, **kw).loss
    if impl == "eager":
        if true_negative:
            return lambda: eager_true_negative(hidden, weight, bias, labels, table)
        return lambda: F.cross_entropy(F.linear(hidden, weight, bias).float(), labels)
    if impl == "tnops":
        return lambda: tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, **kw).loss
    if impl == "torch-linear-ce":
        if true_negative or not has_torch_linear_ce():
            return None  # no hard correction, sampling or SR; or a torch older than 2.13
        return lambda: F.linear_cross_entropy(hidden, weight, labels, linear_bias=bias,
                                              options=torch.nn.LinearCrossEntropyOptions())
    raise ValueError(f"impl: expected reference, eager, tnops or torch-linear-ce, got {impl!r}")


def make_inputs(n: int, vocab: int, width: int, device: str, dtype: torch.dtype, true_negative: bool = True):
    """Random generator-head inputs and a random synonym table of 20 pairs per token (None without HC)."""
    torch.manual_seed(0)
    hidden = torch.randn(n, width, device=device, dtype=dtype, requires_grad=True)
    weight = (torch.randn(vocab, width, device=device) * width**-0.5).to(dtype).requires_grad_()
    bias = torch.zeros(vocab, device=device, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, vocab, (n,), device=device)
    table = None
    if true_negative:
        pairs = torch.randint(0, vocab, (2, 20 * vocab))
        table = tnops.SynonymTable.from_pairs(pairs[0], pairs[1], vocab).to(device)
    return hidden, weight, bias, labels, table
