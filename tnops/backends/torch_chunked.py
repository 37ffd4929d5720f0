"""The ``torch`` backend: the memory-bounded MLM head in plain PyTorch, for any device.

Rows are processed in chunks of ``backends.chunk_rows(V)``, so at most one ``[chunk, V]`` block of
logits exists at a time.  For each chunk we form the logits in float32 (inputs up-cast, like a fused
kernel's fp32 accumulator), take the log-sum-exp, the gold logit, the prediction (argmax or Gumbel-max with
the shared Philox stream) and the hard-correction check, and — when gradients are wanted and the
reduction is a scalar — the gradient of the chunk right away (the Liger-Kernel trick: three matmuls
instead of the four of recompute-in-backward).  ``reduction="none"`` keeps only the log-sum-exp and
recomputes the chunk logits in backward, because per-row output gradients cannot be applied to an
already-summed weight gradient.

Only masked rows are visited on CPU (their indices are gathered once); on other devices every row is
visited and unmasked rows are selected out, which avoids a host synchronisation.  SR uses the shared
``tnops.losses`` maths.  Every dtype is served (float64 in float64, the rest in float32).
"""
from __future__ import annotations

import torch

from tnops import backends, losses
from tnops import random as tn_random
from tnops.options import MLMOptions
from tnops.outputs import MLMRows
from tnops.synonyms.csr import CSRView

NAME = "torch"
FUSES_GRADIENTS = True


def unavailable() -> str | None:
    return None


def refuses(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


class Head:
    """Produces float logits for a set of rows: the LM head ``h Wᵀ + b``, or rows of given logits."""

    def __init__(self, inputs, weight, bias):
        self.cdt = losses.compute_dtype(inputs.dtype)
        self.inputs = inputs
        self.weight = None if weight is None else weight.to(self.cdt)
        self.bias = None if bias is None else bias.to(self.cdt)

    def logits(self, rows: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[R, V]`` and inputs ``[R, E]`` of ``rows``; rows not ``live`` read as zeros, so a NaN or
        inf in an ignored row never reaches a loss or a gradient (selected out, never multiplied by 0)."""
        x = self.inputs[rows].to(self.cdt)
        x = torch.where(live[:, None], x, 0)
        if self.weight is None:
            return x, x
        z = x @ self.weight.T
        if self.bias is not None:
            z += self.bias
        return z, x


def _predict(z, gold, row_keys, opts: MLMOptions, vocab_size: int):
    scores = z  # float32, or float64 for float64 inputs: the argmax is taken in the inputs' precision
    if opts.prediction == "sample":
        scores = z / opts.temperature + tn_random.gumbel(opts.seed, row_keys, vocab_size).to(z.dtype)
    if opts.disallow_correct:
        scores = scores.scatter(1, gold[:, None], float("-inf"))
    return scores.argmax(dim=1)


def forward_chunks(head: Head, labels, row_ids, table: CSRView | None, opts: MLMOptions,
                   want_grads: tuple[bool, bool, bool], coefficients=(1.0, 0.0, 1.0, 0.0)):
    """Per-row ``nll, lse, zmean, predictions, corrected`` and, with ``want_grads``, the gradients of the kept rows'
    ``dz = (a + b·lse)·softmax - c·onehot(gold) - d/V`` (``coefficients = (a, b, c, d)``)."""
    n = labels.shape[0]
    vocab_size = head.weight.shape[0] if head.weight is not None else head.inputs.shape[1]
    device = labels.device
    masked = labels != opts.ignore_index
    visit = masked.nonzero().squeeze(1) if device.type == "cpu" else torch.arange(n, device=device)
    nll_all = torch.zeros(n, dtype=head.cdt, device=device)
    lse_all = torch.zeros(n, dtype=head.cdt, device=device)
    zmean_all = torch.zeros(n, dtype=head.cdt, device=device)
    predictions = torch.full((n,), opts.ignore_index, dtype=torch.long, device=device)
    corrected = torch.zeros(n, dtype=torch.bool, device=device)
    want_input, want_weight, want_bias = want_grads
    grad_input = torch.zeros(head.inputs.shape, dtype=head.cdt, device=device) if want_input else None
    grad_weight = torch.zeros_like(head.weight) if want_weight else None
    grad_bias = torch.zeros(vocab_size, dtype=head.cdt, device=device) if want_bias else None
    a, b, c, d = coefficients
    step = backends.chunk_rows(vocab_size)
    for start in range(0, visit.numel(), step):
        rows = visit[start:start + step]
        is_masked = masked[rows]
        z, x = head.logits(rows, is_masked)
        y = labels[rows]
        gold = torch.where(is_masked, y, 0).long()
        lse = torch.logsumexp(z, dim=1)
        zmean = z.mean(1)
        pred = _predict(z, gold, rows if row_ids is None else row_ids[rows], opts, vocab_size)
        if table is None:
            fixed = torch.zeros_like(is_masked)
        else:
            fixed = is_masked & (pred != gold) & table.is_synonym(gold, pred)
        kept = is_masked & ~fixed
        z_gold = z.gather(1, gold[:, None]).squeeze(1)
        coef = None
        if any(want_grads):
            on = kept.to(lse.dtype)  # selected, not multiplied: lse of a dead row may be inf
            coef = torch.stack([torch.where(kept, a + b * lse, 0) if b else on * a, on * c, on * d])
        dz, other = _logit_gradient(z, lse, gold, kept, coef, uniform=d != 0)  # z is dz from here on
        nll_all[rows] = torch.where(is_masked, _cross_entropy(lse, z_gold, other), 0)
        lse_all[rows] = torch.where(is_masked, lse, 0)
        zmean_all[rows] = torch.where(is_masked, zmean, 0)
        predictions[rows] = torch.where(is_masked, pred, opts.ignore_index)
        corrected[rows] = fixed
        if any(want_grads):
            _accumulate(dz, x, rows, head, grad_input, grad_weight, grad_bias)
    return nll_all, lse_all, zmean_all, predictions, corrected, (grad_input, grad_weight, grad_bias)


def _logit_gradient(z, lse, gold, live, coef, uniform=True):
    """``(dz, other)`` in place on ``z``: ``dz = α·softmax(z) - γ·onehot(gold) - δ/V`` per row (``coef [3, R]``; None:
    the softmax itself), 0 on rows not ``live``; ``uniform=False`` promises δ = 0 (one pass less).

    ``other = Σ_{v≠gold} softmax(z)_v`` is summed apart and the gold entry written as ``-α·other + (α - γ)``: on a
    confident row (p(gold) → 1) ``α·p_gold - γ`` would cancel to a few ulp, while ``other`` keeps every digit.  Dead
    rows are selected out, not multiplied by 0, so a NaN or inf there cannot reach the gradients.
    """
    dz = z.sub_(lse[:, None]).exp_()
    index = gold[:, None]
    dz.scatter_(1, index, 0.0)
    other = dz.sum(1)
    if coef is None:
        dz.scatter_(1, index, (1.0 - other)[:, None])
        return dz, other
    alpha, gamma, delta = coef.to(dz.dtype)
    dz.mul_(alpha[:, None])
    dz.scatter_(1, index, (alpha - gamma - alpha * other)[:, None])
    if uniform:
        dz.sub_((delta / dz.shape[1])[:, None])
    return dz.masked_fill_(~live[:, None], 0), other


def _cross_entropy(lse, z_gold, other):
    """``lse - z_gold``, or ``-log1p(-other)`` (the same value, ``other = 1 - p(gold)``) where that is the accurate
    form: on confident rows ``lse - z_gold`` is a difference of two near-equal numbers."""
    return torch.where(other < 0.5, -torch.log1p(-other), lse - z_gold)


def _accumulate(dz, x, rows, head: Head, grad_input, grad_weight, grad_bias):
    if grad_input is not None:
        grad_input[rows] = dz @ head.weight if head.weight is not None else dz
    if grad_weight is not None:
        grad_weight.addmm_(dz.T, x)
    if grad_bias is not None:
        grad_bias += dz.sum(0)


def recompute_grads(head: Head, labels, lse, coef, want, out_dtypes):
    """Gradients of the rows' ``dz = α·softmax - γ·onehot(gold) - δ/V`` (``coef [3, N]``), recomputing each chunk's
    logits; rows whose coefficients are all 0 cost nothing.

    Serves the backward of the custom op.  Returns ``[d_inputs, d_weight, d_bias]`` (None where not wanted), cast
    to ``out_dtypes``.
    """
    vocab_size = head.inputs.shape[1] if head.weight is None else head.weight.shape[0]
    device = head.inputs.device
    want_input, want_weight, want_bias = want
    grad_input = torch.zeros(head.inputs.shape, dtype=head.cdt, device=device) if want_input else None
    grad_weight = torch.zeros_like(head.weight) if want_weight else None
    grad_bias = torch.zeros(vocab_size, dtype=head.cdt, device=device) if want_bias else None
    live_rows = (coef != 0).any(0)
    visit = live_rows.nonzero().squeeze(1) if device.type == "cpu" else torch.arange(live_rows.numel(), device=device)
    step = backends.chunk_rows(vocab_size)
    for start in range(0, visit.numel(), step):
        rows = visit[start:start + step]
        live = live_rows[rows]
        z, x = head.logits(rows, live)
        gold = torch.where(live, labels[rows], 0).long()
        uniform = device.type != "cpu" or bool((coef[2, rows] != 0).any())  # no host sync on accelerators
        dz, _ = _logit_gradient(z, lse[rows], gold, live, coef[:, rows], uniform)
        _accumulate(dz, x, rows, head, grad_input, grad_weight, grad_bias)
    return [None if g is None else g.to(dt) for g, dt in zip((grad_input, grad_weight, grad_bias), out_dtypes)]


def aux_rows(has_sr: bool) -> int:
    return 0


rtd_rows = losses.rtd_rows


def mlm_forward(inputs, weight, bias, labels, row_ids, table: CSRView | None, sr_embedding, options: MLMOptions,
                want_grads: tuple[bool, bool, bool], coefficients) -> MLMRows:
    """The backend contract's forward (``tnops.backends``): chunked head, then SR on the predictions."""
    head = Head(inputs, weight, bias)
    # The chunk maths is fp32 (fp64) by design; autocast would silently drop the matmuls to half precision.
    with torch.autocast(inputs.device.type, enabled=False):
        nll, lse, zmean, predictions, corrected, grads = forward_chunks(head, labels, row_ids, table, options,
                                                                        want_grads, coefficients)
    sr = None
    if sr_embedding is not None:
        sr = losses.sr_rows(sr_embedding, labels, predictions, labels != options.ignore_index)
    out_dtypes = (inputs.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    fused = None
    if any(want_grads):
        fused = tuple(None if g is None else g.to(dt) for g, dt in zip(grads, out_dtypes))
    return MLMRows(nll, lse, zmean, predictions, corrected, sr, None, fused)


def mlm_backward(inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux,
                 options: MLMOptions, want: tuple[bool, bool, bool, bool]):
    """Gradients of the rows' ``dz = α·softmax - γ·onehot - δ/V`` (``coef [3, N]``) and of ``Σ sr_coef · sr``."""
    out_dtypes = (inputs.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    grads = [None, None, None]
    if any(want[:3]):
        with torch.autocast(inputs.device.type, enabled=False):
            grads = recompute_grads(Head(inputs, weight, bias), labels, lse, coef, want[:3], out_dtypes)
    d_sr = None
    if want[3] and sr_embedding is not None:
        d_sr = sr_backward(sr_embedding, labels, predictions, sr_coef, options)
    return (*grads, d_sr)


def sr_backward(sr_embedding, labels, predictions, sr_coef, options: MLMOptions):
    """The SR gradient ``[V, E']`` with the shared maths; backends without an SR kernel use it too."""
    live = labels != options.ignore_index
    return losses.sr_rows_backward(sr_embedding, labels, predictions, live, sr_coef).to(sr_embedding.dtype)
