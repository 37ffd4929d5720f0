"""The one helper that holds a backend to the reference: every output and every gradient.

``check_backend`` runs ``tnops.linear_mlm_loss`` (or ``mlm_loss``) on a backend, then the float64 reference
(``tnops.reference``) on the same inputs with the backend's own predictions, and compares loss, both terms,
predictions, corrected rows and the gradients of hidden, weight, bias and the SR table under one random
upstream gradient shared by all three runs.  float32/float64: relative error ≤ ``RTOL``.  bfloat16/float16:
error ≤ 2 × the error of plain PyTorch in that dtype (the logits made by a half-precision ``F.linear``, then
the reference) + ``0.5·eps(dtype)·max|reference|``.
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
        for name in ("loss", "mlm_loss", "sr_loss"):
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
    eps = torch.finfo(dtype).eps
    for name in ("loss", "mlm_loss", "sr_loss"):
        r = getattr(ref, name)
        bound = 2 * (getattr(eager, name).double() - r).abs().max() + 0.5 * eps * r.abs().max()
        assert (getattr(out, name).double() - r).abs().max() <= bound, name
    for (name, _), g, r, e in zip(given, grads, ref_grads, eager_grads):
        assert g.dtype == dtype
        bound = 2 * (e.double() - r).abs().max() + 0.5 * eps * r.abs().max()
        assert (g.double() - r).abs().max() <= bound, f"d {name}"
    return out, grads
