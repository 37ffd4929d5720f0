"""The ``reference`` backend: ``tnops.reference`` (the eager spec, full ``[N, V]`` logits) behind the contract.

For debugging and for checking the custom-op plumbing itself; slow and memory-hungry on purpose.  The
backward recomputes the spec under autograd with the stored predictions.
"""
from __future__ import annotations

import torch

from tnops import losses, reference
from tnops.options import MLMOptions
from tnops.outputs import MLMRows
from tnops.synonyms.csr import CSRView

NAME = "reference"
FUSES_GRADIENTS = False


def unavailable() -> str | None:
    return None


def refuses(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


def _logits(inputs, weight, bias, masked):
    x = reference.select_rows(masked, inputs)
    return x if weight is None else torch.nn.functional.linear(x, weight, bias)


def aux_rows(has_sr: bool) -> int:
    return 0


rtd_rows = losses.rtd_rows


def mlm_forward(inputs, weight, bias, labels, row_ids, table: CSRView | None, sr_embedding, options: MLMOptions,
                want_grads, coefficients) -> MLMRows:
    masked = labels != options.ignore_index
    logits = _logits(inputs, weight, bias, masked)
    out = reference.mlm_loss(logits, labels, synonyms=table, prediction=options.prediction,
                             temperature=options.temperature, disallow_correct=options.disallow_correct,
                             seed=options.seed, sr_weight=1.0 if sr_embedding is not None else 0.0,
                             sr_embedding=sr_embedding, ignore_index=options.ignore_index, reduction="none",
                             row_ids=row_ids)
    z = reference.select_rows(masked, logits.to(torch.promote_types(logits.dtype, torch.float32)))
    gold = torch.where(masked, labels, 0).long()
    nll = torch.where(masked, torch.nn.functional.cross_entropy(z, gold, reduction="none"), 0) if z.shape[0] \
        else z.new_zeros(0)
    lse = torch.where(masked, torch.logsumexp(z, dim=-1), 0)
    zmean = torch.where(masked, z.mean(-1), 0)
    sr = out.sr_loss if sr_embedding is not None else None
    return MLMRows(nll, lse, zmean, out.predictions, out.corrected, sr)


def mlm_backward(inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux,
                 options: MLMOptions, want):
    """``dz = α·softmax(z) - γ·onehot(gold) - δ/V`` (``coef [3, N]``) on the full logits, then the three products
    (autograd is not available inside a custom op, so the gradient is written out; the tests hold it to the spec's
    autograd)."""
    grads = [None, None, None]
    if any(want[:3]):
        live = (coef != 0).any(0)
        x = reference.select_rows(live, inputs.to(torch.promote_types(inputs.dtype, torch.float32)))
        w = None if weight is None else weight.to(x.dtype)
        z = x if w is None else torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))
        alpha, gamma, delta = coef.to(x.dtype)
        dz = torch.softmax(reference.select_rows(live, z), dim=-1) * alpha[:, None] - delta[:, None] / z.shape[1]
        dz[torch.arange(z.shape[0]), torch.where(live, labels, 0)] -= gamma
        dz = reference.select_rows(live, dz)
        grads = [dz @ w if w is not None else dz, None if w is None else dz.T @ x, dz.sum(0)]
        grads = [g.to(t.dtype) if t is not None and wanted else None
                 for g, t, wanted in zip(grads, (inputs, weight, bias), want[:3])]
    d_sr = None
    if want[3]:
        live = labels != options.ignore_index
        d_sr = losses.sr_rows_backward(sr_embedding, labels, predictions, live, sr_coef).to(sr_embedding.dtype)
    return (*grads, d_sr)
