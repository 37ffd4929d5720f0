"""The one helper that holds a backend to the reference: every output and every gradient.

``check_backend`` runs ``tnops.linear_mlm_loss`` (or ``mlm_loss``) on a backend, then the float64 reference
(``tnops.reference``) on the same inputs with the backend's own predictions, and compares loss, both terms,
predictions, corrected rows and the gradients of hidden, weight, bias and the SR table under one random
upstream gradient shared by all three runs.  float32/float64: relative error ≤ ``RTOL``.  bfloat16/float16
(``half_bounds``): max error ≤ 2 × the max error of plain PyTorch on the same rounded inputs (the logits made by a
half-precision ``F.linear``, then the reference) + 0.1 % of the largest entry one row can contribute.  With
``G = d(Σ upstream·mlm_loss)/dz`` the float64 reference's logits gradient, ``x`` the hidden rows and ``W`` the
weight, one row i contributes at most
  d hidden: ``‖G_i‖₁ · max|W|``;  d weight: ``max_v |G_iv| · max_k |x_ik|``;  d bias: ``max_v |G_iv|``;
  loss / mlm_loss / sr_loss: the row's CE + sr_weight·SR / its CE / its SR (float64, ``reduction="none"``);
  d sr_embedding (a separate SR table, torch maths on every backend): ``max|reference gradient|``;
and the slack is 1e-3 × the largest of these over rows.  No slack scales with |gradient| itself, so a
gradient formed as a difference of two large rounded terms (``(e/s)·W − W[gold]`` on a confident head,
p(gold) → 1) fails even where the true gradient is tiny.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import tnops
from tnops import reference

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
ROW_KEYS = ("prediction", "seed", "temperature", "backend")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max |e| in float64 (0 when both are all zero)."""
    actual, expected = actual.double(), expected.double()
    if not expected.numel():
        return 0.0
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def make_inputs(n, vocab, width, dtype=torch.float32, *, bias=True, masked_every=3, lead=None):
    hidden = torch.randn(n, width, dtype=dtype) if lead is None else torch.randn(*lead, width, dtype=dtype)
    weight = (torch.randn(vocab, width) * width**-0.5).to(dtype)
    b = (torch.randn(vocab) * 0.1).to(dtype) if bias else None
    labels = torch.randint(0, vocab, hidden.shape[:-1])
    labels.view(-1)[::masked_every] = -100
    return hidden, weight, b, labels


def table_hitting_predictions(make_table, labels, predictions, vocab):
    """A table listing half of the mispredicted (gold, prediction) pairs, so hard correction really fires."""
    pairs = [(int(g), int(p)) for g, p in zip(labels.reshape(-1), predictions.reshape(-1)) if g >= 0 and g != p]
    return make_table(pairs[::2], vocab)


def _assert_same_or_near_tie(got, want, hidden, weight, bias, labels, kw, rel=1e-5):
    """Predictions agree exactly, except where the spec's scores of the two ids are within ``rel`` (float32
    near-ties: another summation order may round the other way)."""
    differ = (got != want).reshape(-1)
    if not differ.any():
        return
    z = F.linear(hidden.double(), weight.double(), None if bias is None else bias.double()).reshape(-1, weight.shape[0])
    rows = differ.nonzero().squeeze(1)
    scores = z[rows]
    if kw.get("prediction") == "sample":
        row_ids = kw.get("row_ids")
        keys = rows if row_ids is None else row_ids.reshape(-1)[rows].long()
        seed = int(kw["seed"]) % 2**64
        scores = scores / kw.get("temperature", 1.0) + tnops.random.gumbel(seed, keys, weight.shape[0]).double()
    a = scores.gather(1, got.reshape(-1)[rows, None]).squeeze(1)
    b = scores.gather(1, want.reshape(-1)[rows, None]).squeeze(1)
    gap = ((a - b).abs() / scores.abs().amax(1).clamp_min(1)).max().item()
    assert gap <= rel, f"predictions differ at rows {rows.tolist()} by a score gap of {gap:.3g} (not a near-tie)"


def _grads(loss, leaves, upstream):
    grads = torch.autograd.grad((loss * upstream.to(loss.dtype)).sum(), leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]


def check_backend(backend, hidden, weight, bias, labels, *, sr_embedding=None, **kw):
    """Run ``backend`` and the reference; assert agreement.  Returns the backend's ``MLMLossOutput`` and grads."""
    names = ["hidden", "weight", "bias", "sr_embedding"]
    given = [(n, t) for n, t in zip(names, (hidden, weight, bias, sr_embedding)) if t is not None]
    fast = {n: t.detach().clone().requires_grad_() for n, t in given}
    exact = {n: t.detach().double().requires_grad_() for n, t in given}
    out = tnops.linear_mlm_loss(fast["hidden"], fast["weight"], labels, bias=fast.get("bias"),
                                sr_embedding=fast.get("sr_embedding"), backend=backend, **kw)
    spec_kw = {k: v for k, v in kw.items() if k not in ROW_KEYS}
    ref = reference.linear_mlm_loss(exact["hidden"], exact["weight"], labels, bias=exact.get("bias"),
                                    sr_embedding=exact.get("sr_embedding"), predictions=out.predictions, **spec_kw)
    # predictions: the backend's are the spec's own (same seed, the inputs' precision)
    own = reference.linear_mlm_loss(hidden, weight, labels, bias=bias, sr_embedding=sr_embedding,
                                    **{k: v for k, v in kw.items() if k != "backend"})
    _assert_same_or_near_tie(out.predictions, own.predictions, hidden, weight, bias, labels, kw)
    assert torch.equal(out.corrected, ref.corrected), "corrected rows differ"
    assert out.loss.shape == ref.loss.shape
    upstream = torch.randn(ref.loss.shape, dtype=torch.float64)
    grads = _grads(out.loss, list(fast.values()), upstream)
    ref_grads = _grads(ref.loss, list(exact.values()), upstream)
    dtype = hidden.dtype
    if dtype in RTOL:
        for name in ("loss", "mlm_loss", "sr_loss", "z_loss"):
            assert rel_err(getattr(out, name), getattr(ref, name)) <= RTOL[dtype], name
        for (name, _), g, r in zip(given, grads, ref_grads):
            assert g.dtype == dtype and rel_err(g, r) <= RTOL[dtype], f"d {name}: {rel_err(g, r):.3g}"
        return out, grads
    # half precision: plain PyTorch in that dtype is the yardstick
    plain = {n: t.detach().clone().requires_grad_() for n, t in given}
    logits = F.linear(plain["hidden"], plain["weight"], plain.get("bias"))
    table = plain.get("sr_embedding", plain["weight"])
    eager = reference.mlm_loss(logits, labels, sr_embedding=table, predictions=out.predictions, **spec_kw)
    eager_grads = _grads(eager.loss, list(plain.values()), upstream)
    slack = half_bounds(exact, labels, out.predictions, upstream, spec_kw, dict(zip([n for n, _ in given],
                                                                                    ref_grads)))
    for name in ("loss", "mlm_loss", "sr_loss", "z_loss"):
        _half_within(name, getattr(out, name), getattr(eager, name), getattr(ref, name), slack[name])
    for (name, _), g, r, e in zip(given, grads, ref_grads, eager_grads):
        assert g.dtype == dtype
        _half_within(f"d {name}", g, e, r, slack[name])
    return out, grads


def _half_within(name, got, plain, ref, slack):
    err, plain_err = (got.double() - ref).abs().max().item(), (plain.double() - ref).abs().max().item()
    assert err <= 2 * plain_err + 1e-3 * slack, \
        f"{name}: error {err:.3g} > 2 × plain PyTorch's {plain_err:.3g} + 1e-3 × {slack:.3g}"


def half_bounds(exact, labels, predictions, upstream, spec_kw, ref_grads) -> dict[str, float]:
    """The largest entry one row can contribute to each output (module docstring), from the float64 reference."""
    hidden, weight, bias = exact["hidden"].detach(), exact["weight"].detach(), exact.get("bias")
    z = F.linear(hidden, weight, None if bias is None else bias.detach()).requires_grad_()
    ce_kw = {k: v for k, v in spec_kw.items() if k not in ("sr_weight", "sr_embedding", "reduction")}
    ce = reference.mlm_loss(z, labels, predictions=predictions, **ce_kw,
                            reduction=spec_kw.get("reduction", "mean"))
    (g,) = _grads(ce.loss, [z], upstream)  # CE and z-loss: the SR keywords are left out above
    g = g.reshape(-1, weight.shape[0]).abs()
    x = hidden.reshape(-1, weight.shape[1]).abs()
    rows = reference.mlm_loss(z.detach(), labels, predictions=predictions, sr_embedding=exact.get("sr_embedding",
                              weight).detach(), **{**spec_kw, "reduction": "none"})
    ce_row, sr_row = rows.mlm_loss.abs().max().item(), rows.sr_loss.abs().max().item()
    z_row = rows.z_loss.abs().max().item()
    top = lambda t: t.max().item() if t.numel() else 0.0  # noqa: E731
    return {"loss": ce_row + z_row + spec_kw.get("sr_weight", 0.0) * sr_row, "mlm_loss": ce_row, "sr_loss": sr_row,
            "z_loss": z_row,
            "hidden": top(g.sum(1)) * weight.abs().max().item(),
            "weight": top(g.amax(1) * x.amax(1)) if g.shape[1] else 0.0, "bias": top(g),
            "sr_embedding": top(ref_grads["sr_embedding"].abs()) if "sr_embedding" in ref_grads else 0.0}


def confident_inputs(n, vocab, width, dtype, *, scale=(20.0, 60.0)):
    """``make_inputs`` with every masked row's hidden state ``c·W[gold] + noise``, c uniform in ``scale``: a trained,
    confident head (p(gold) → 1, CE ≈ 1e-5 … 1e-20), where the gradient is a small difference of large terms."""
    hidden, weight, b, labels = make_inputs(n, vocab, width)
    masked = labels != -100
    c = torch.empty(int(masked.sum())).uniform_(*scale)
    hidden[masked] = c[:, None] * weight[labels[masked]] + 0.01 * torch.randn(int(masked.sum()), width)
    return hidden.to(dtype), weight.to(dtype), b.to(dtype), labels
