"""Correctness of a benchmark case against a float64 computation of the tnops reference, before it is timed.

The case's process runs its first call with fresh gradients and keeps a *summary*: the loss, the predictions
(``tn``), the full ``bias`` gradient and the ``hidden`` and ``weight`` gradients projected on ``K`` random
directions (``dh @ P``, ``dW @ Q``, with ``P, Q [E, K]`` Gaussian from a fixed seed).  The checker process builds
the same inputs, casts them to float64 and computes the reference loss (``tnops.reference.mlm_loss`` on row
chunks of float64 logits) and the same projections of its exact gradients, ``G @ (W P)`` and ``Gᵀ (h Q)`` from the
logits' gradient ``G``, which costs one float64 matmul instead of three, once per shape and dtype: each case's
objective is then made from it with the case's own predictions (so sampled objectives are checked row by row).
A gradient wrong in any row changes that row of its projection (almost surely, the directions being Gaussian), so
a bad row of ``dW`` among 250,000 is caught (``compare`` weighs every row against its own size).
"""
from __future__ import annotations

import cases
import torch

IGNORE_INDEX = -100
PROJECTIONS = 8
PROJECTION_SEED = 12345
CHUNK_ELEMENTS = 1 << 25  # float64 logits per chunk of the reference: 256 MB
# dtype -> (loss, gradient) tolerance, relative to the reference's magnitude
TOLERANCES = {"fp32": (1e-4, 2e-3), "bf16": (2e-2, 6e-2), "fp16": (1e-2, 3e-2)}


def directions(width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 ``P, Q [width, K]`` Gaussian directions every process draws alike."""
    generator = torch.Generator().manual_seed(PROJECTION_SEED)
    p, q = torch.randn(2, width, PROJECTIONS, generator=generator, dtype=torch.float64)
    return p.to(device), q.to(device)


def summarize(case: cases.Case, loss, predictions, leaves) -> dict:
    """What the checker compares of one call: ``{"loss": float64 scalar, "predictions": int64 [N] or None,
    "dh": [N, K], "dw": [V, K], "db": [V]}`` (the gradients only for ``fwdbwd``; ``db`` None for a provider that
    takes no bias).  ``leaves``: ``(hidden, weight, bias)`` after the call, their ``.grad`` from this call alone."""
    hidden, weight, bias = leaves
    out = {"loss": loss.detach().double().cpu(),
           "predictions": None if predictions is None else predictions.detach().long().cpu()}
    if case.mode == "fwdbwd":
        p, q = directions(hidden.shape[-1], hidden.device)
        for name, grad in (("hidden", hidden.grad), ("weight", weight.grad)):
            if grad is None:
                raise ValueError(f"{case.id}: no gradient reached {name}")
        out["dh"] = (hidden.grad.double() @ p).cpu()
        out["dw"] = (weight.grad.double() @ q).cpu()
        out["db"] = None if bias.grad is None else bias.grad.double().cpu()
    return out


def full_pass(inputs) -> dict:
    """The float64 plain cross-entropy of every row of ``inputs = (hidden, weight, bias, labels, table)`` (float64),
    as if every row were kept: ``ce_rows [N]`` and the projections of its gradients, ``dh_rows [N, K]`` (per row),
    ``dw [V, K]``, ``db [V]`` (sums over rows).  The one expensive step, made once per dtype and shape."""
    from tnops import reference

    hidden, weight, bias, labels, _ = inputs
    n, vocab = hidden.shape[0], weight.shape[0]
    p, q = directions(hidden.shape[-1], hidden.device)
    weight_p, hidden_q = weight @ p, hidden @ q
    full = {"ce_rows": torch.zeros(n, dtype=torch.float64, device=hidden.device),
            "dh_rows": torch.zeros(n, PROJECTIONS, dtype=torch.float64, device=hidden.device),
            "dw": torch.zeros(vocab, PROJECTIONS, dtype=torch.float64, device=hidden.device),
            "db": torch.zeros(vocab, dtype=torch.float64, device=hidden.device), "hidden_q": hidden_q, "q": q}
    rows = max(1, CHUNK_ELEMENTS // vocab)
    for start in range(0, n, rows):
        chunk = slice(start, start + rows)
        logits = torch.addmm(bias, hidden[chunk], weight.T).requires_grad_()
        ce = reference.mlm_loss(logits, labels[chunk], reduction="none").mlm_loss
        (grad,) = torch.autograd.grad(ce.sum(), logits)
        full["ce_rows"][chunk] = ce.detach()
        full["dh_rows"][chunk] = grad @ weight_p
        full["dw"] += grad.T @ hidden_q[chunk]
        full["db"] += grad.sum(0)
    return full


def reference_summary(inputs, full: dict, objective: str, predictions) -> dict:
    """The float64 reference of ``summarize``'s fields for ``objective`` (``"ce"``, or ``"tn"`` with the case's own
    ``predictions [N]``), from ``full = full_pass(inputs)``: the rows hard correction drops (DESIGN §1: prediction
    != label and a synonym of it; few) are taken out of the cross-entropy sums, and SR is added."""
    from tnops import reference

    hidden, weight, bias, labels, table = inputs
    masked = labels != IGNORE_INDEX
    kept = masked.clone()
    if objective == "tn":
        predictions = predictions.to(labels.device)
        kept &= ~((predictions != labels) & table.is_synonym(labels, predictions))
    dw, db = full["dw"].clone(), full["db"].clone()
    dropped = torch.nonzero(~kept).flatten()
    if dropped.numel():
        logits = torch.addmm(bias, hidden[dropped], weight.T).requires_grad_()
        (grad,) = torch.autograd.grad(reference.mlm_loss(logits, labels[dropped], reduction="sum").mlm_loss, logits)
        dw -= grad.T @ full["hidden_q"][dropped]
        db -= grad.sum(0)
    scale = 1.0 / max(int(kept.sum()), 1)
    loss = full["ce_rows"][kept].sum() * scale
    dh, dw, db = full["dh_rows"] * kept[:, None] * scale, dw * scale, db * scale
    if objective == "tn":  # SR on the rows of the embedding (= weight) that the gold and predicted ids touch
        n = labels.shape[0]
        ids, inverse = torch.unique(torch.cat([labels, predictions]), return_inverse=True)
        rows_used = weight[ids].clone().requires_grad_()
        sr = reference.sr_loss(rows_used, inverse[:n], inverse[n:], reduction="mean")
        (grad_rows,) = torch.autograd.grad(sr, rows_used)
        loss = loss + cases.SR_WEIGHT * sr.detach()
        dw.index_add_(0, ids, cases.SR_WEIGHT * (grad_rows @ full["q"]))
    return {"loss": loss.cpu(), "dh": dh.cpu(), "dw": dw.cpu(), "db": db.cpu()}


def compare(case: cases.Case, got: dict, want: dict) -> tuple[dict, list[str]]:
    """Errors of ``got`` (a case's summary) against ``want`` (the reference's) and the failures among them, each a
    sentence naming the quantity, its error and the tolerance of the case's dtype.

    Loss: relative error (absolute below 1).  Gradients: the largest ``‖got_r - want_r‖ / (‖want_r‖ + m)`` over
    rows ``r`` of the projections (``[rows, K]``; ``db``: one entry a row), ``m`` the median ``‖want_r‖``: each row
    against its own size, so an error in a small row (the softmax part of a word that is nobody's label, ~1/V of a
    label's row) counts as much as one in a large row, while one entry of a projection that happens to be near
    zero does not make a loud error of an ordinary rounding.
    """
    loss_tol, grad_tol = TOLERANCES[case.dtype]
    errors = {"loss": float((got["loss"] - want["loss"]).abs() / want["loss"].abs().clamp_min(1.0))}
    if case.mode == "fwdbwd":
        for name in ("dh", "dw", "db"):
            if got.get(name) is None:
                continue
            size = want[name].reshape(want[name].shape[0], -1).norm(dim=1)
            miss = (got[name] - want[name]).reshape(size.shape[0], -1).norm(dim=1)
            errors[name] = float((miss / (size + size.median().clamp_min(1e-300))).max())
    failures = []
    for name, error in errors.items():
        tolerance = loss_tol if name == "loss" else grad_tol
        if not error <= tolerance:  # NaN fails too
            failures.append(f"{name}: relative error {error:.3g} > {tolerance:g} ({case.dtype})")
    return errors, failures
