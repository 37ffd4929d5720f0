"""Triton kernels on given logits (``mlm_loss``) and on trained, confident heads, under TRITON_INTERPRET=1 or on a
GPU; the helpers, autouse fixtures and skip rule are test_ops_triton's."""
import pytest
import torch
from backend_check import _assert_same_or_near_tie
from test_ops_triton import (  # noqa: F401  (autouse fixtures and the skip rule come with the import)
    DEVICE,
    _poisoned_empty,
    _triton_backend,
    ce_coef,
    inputs,
    pytestmark,
    rel_err,
)

import tnops
from tnops import reference
from tnops.ops.config import head_config
from tnops.ops.mlm_head import mlm_head_backward, mlm_head_forward, sr_backward


@pytest.fixture
def launches(monkeypatch):
    """Counts the launches of each head kernel variant by (kernel, HAS_WEIGHT)."""
    from tnops.ops import mlm_head_kernels

    counts = {}
    for name in ("_mlm_fwd_kernel", "_mlm_bwd_kernel"):
        real = getattr(mlm_head_kernels, name)

        class Counted:
            def __getitem__(self, grid, real=real, name=name):
                def launch(*args, **kwargs):
                    key = (name, kwargs["HAS_WEIGHT"])
                    counts[key] = counts.get(key, 0) + 1
                    return real[grid](*args, **kwargs)
                return launch

        monkeypatch.setattr(mlm_head_kernels, name, Counted())
    return counts


@pytest.mark.parametrize("prediction", ["argmax", "sample"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_mlm_loss_on_given_logits_runs_the_kernels(make_table, launches, prediction, reduction):
    """``tnops.mlm_loss(..., backend="triton")``: the kernels read the logits (no fallback); loss, predictions,
    corrected rows and the gradients of logits and SR table vs the fp64 reference (1e-5), with a strided
    (column-major) logits tensor and a block of -inf logits (masked vocabulary) wider than a tile."""
    h, w, b, y = inputs(37, 300, 16)
    base = torch.nn.functional.linear(h, w, b)
    base[:, :260] = float("-inf")  # a masked vocabulary: the first tile (256 ids here and on a GPU) is all -inf
    y = torch.where(y >= 0, 260 + y % 40, y)  # golds are never masked ids
    emb = torch.randn(300, 8, device=DEVICE)
    kw = {"prediction": prediction, "seed": 9, "sr_weight": 0.5, "reduction": reduction}
    first = tnops.mlm_loss(base, y, sr_embedding=emb, backend="triton", **kw)
    pairs = [(int(g), int(p)) for g, p in zip(y.cpu(), first.predictions.cpu()) if g >= 0 and g != p][::2]
    kw["synonyms"] = make_table(pairs, 300)
    for logits in (base, base.t().contiguous().t()):
        leaves = [logits.detach().requires_grad_(), emb.detach().requires_grad_()]
        launches.clear()
        out = tnops.mlm_loss(leaves[0], y, sr_embedding=leaves[1], backend="triton", **kw)
        exact = [t.detach().double().requires_grad_() for t in leaves]
        ref = reference.mlm_loss(exact[0], y, sr_embedding=exact[1], predictions=out.predictions,
                                 **{k: v for k, v in kw.items() if k not in ("prediction", "seed")})
        assert torch.equal(out.corrected, ref.corrected) and out.corrected.sum() == len(pairs) > 0
        for got, want in ((out.loss, ref.loss), (out.mlm_loss, ref.mlm_loss), (out.sr_loss, ref.sr_loss)):
            assert torch.isfinite(got).all() and rel_err(got, want) < 1e-5
        up = torch.rand(ref.loss.shape, dtype=torch.float64, device=DEVICE)
        grads = torch.autograd.grad((out.loss * up.float()).sum(), leaves)
        for g, r in zip(grads, torch.autograd.grad((ref.loss * up).sum(), exact), strict=True):
            assert g.dtype == torch.float32 and rel_err(g, r) < 1e-5
        spec = reference.predict(base.double(), y, prediction=prediction, seed=9)  # the spec's own predictions
        eye = torch.eye(300, device=DEVICE)
        _assert_same_or_near_tie(out.predictions.cpu(), spec.cpu(), base.cpu(), eye.cpu(), None, y.cpu(), kw)
        assert launches == {("_mlm_fwd_kernel", False): 1, ("_mlm_bwd_kernel", False): 1}


def test_mlm_loss_on_given_logits_ignores_nan_rows_and_keeps_zero_rows():
    """NaN in ignored rows reaches neither loss nor gradient; nothing kept: loss 0, d_logits all zeros."""
    h, w, b, y = inputs(20, 64, 16)
    logits = torch.nn.functional.linear(h, w, b)
    logits[y == -100] = float("nan")
    x = logits.detach().requires_grad_()
    out = tnops.mlm_loss(x, y, backend="triton")
    ref_x = logits.detach().double().requires_grad_()
    ref = reference.mlm_loss(ref_x, y, predictions=out.predictions)
    grad, ref_grad = torch.autograd.grad(out.loss, x)[0], torch.autograd.grad(ref.loss, ref_x)[0]
    assert rel_err(out.loss, ref.loss) < 1e-5 and rel_err(grad, ref_grad) < 1e-5
    assert (grad[y == -100] == 0).all()
    none = torch.full_like(y, -100)
    x = logits.detach().requires_grad_()
    out = tnops.mlm_loss(x, none, backend="triton")
    assert out.loss.item() == 0 and torch.equal(torch.autograd.grad(out.loss, x)[0], torch.zeros_like(x))


def confident(n, vocab, width, bias=True):
    """``inputs`` with every masked row's hidden state ``c·W[gold]`` (c in [20, 60]): a trained head, p(gold) → 1,
    CE per row 1e-5 … 1e-20 (far below fp32's epsilon relative to lse)."""
    h, w, b, y = inputs(n, vocab, width, bias=bias)
    g = torch.Generator().manual_seed(5)
    masked = y != -100
    c = (torch.rand(n, generator=g) * 40 + 20).to(DEVICE)
    h = torch.where(masked[:, None], c[:, None] * w[y.clamp_min(0)], h)
    return h, w, b, y


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_confident_rows_ce_and_gold_gradient_exact(splits, bias):
    """CE per row from ``log1p`` of the non-gold sum (not ``lse - z_gold``), the gold entry of dz as
    ``-(1 - p(gold))`` from that sum (not ``p - 1``): each row's CE within 1e-4 of fp64 even at 1e-20, and every
    gradient within 1e-5; the non-gold sum is merged over vocabulary splits."""
    h, w, b, y = confident(21, 200, 32, bias)
    cfg = head_config(21, 200, 32, h.device, block_n=16, block_v=32, block_e=16, splits=splits)
    out = mlm_head_forward(h, w, b, y, config=cfg)
    exact = [t.detach().double().requires_grad_() for t in (h, w, b) if t is not None]
    ref = reference.linear_mlm_loss(*exact[:2], y, bias=exact[2] if bias else None, predictions=out["predictions"],
                                    reduction="none")
    kept = y != -100
    assert (out["predictions"][kept] == y[kept]).all()
    # fp64 truth without cancellation (the reference's own lse - z_gold cancels below 1e-16 too)
    z = exact[0].detach() @ exact[1].detach().T + (exact[2].detach() if bias else 0)
    gold = y.clamp_min(0)[:, None]
    others = torch.exp(z - z.gather(1, gold)).scatter(1, gold, 0.0)  # exp(z_v - z_gold), v != gold
    true_ce = torch.where(kept, torch.log1p(others.sum(1)), 0.0)
    assert true_ce[kept].max() < 0.1 and true_ce[kept].min() < 1e-15
    assert ((out["nll"].double() - true_ce).abs() <= 1e-4 * true_ce).all()  # row by row, relative
    complement = torch.where(kept, others.sum(1) / (1 + others.sum(1)), 0.0)  # Σ_{v != gold} p_v
    assert ((out["gold_complement"].double() - complement).abs() <= 1e-4 * complement).all()
    up = torch.rand(y.shape, device=DEVICE, dtype=torch.float64)
    coef = torch.where(kept, up.float(), 0.0)
    grads = mlm_head_backward(h, w, b, y, out["lse"], ce_coef(coef), gold_complement=out["gold_complement"],
                              config=cfg)
    for g, r in zip([g for g in grads if g is not None], torch.autograd.grad((ref.loss * up).sum(), exact),
                    strict=True):
        assert rel_err(g, r) < 1e-5


def test_sr_is_exactly_zero_with_no_gradient_when_the_prediction_is_gold():
    """1 - cos(e, e) is 0 exactly and its gradient nothing (fp32 rounding would leave ~1e-7 of each)."""
    h, w, b, y = confident(21, 200, 32)
    emb = torch.randn(200, 24, device=DEVICE) * 3
    out = mlm_head_forward(h, w, b, y, sr_embedding=emb)
    kept = y != -100
    assert (out["predictions"][kept] == y[kept]).all()
    assert (out["sr"] == 0).all()
    coef = torch.where(kept, 1.0, 0.0)
    demb = sr_backward(emb, y, out["predictions"], coef, out["sr_dot"], out["sr_gold_sq"], out["sr_pred_sq"])
    assert (demb == 0).all()
    pred = torch.where(kept, (y + 1) % 200, y)  # rows with another prediction still get theirs
    assert sr_backward(emb, y, pred, coef, out["sr_dot"], out["sr_gold_sq"], out["sr_pred_sq"]).abs().sum() > 0
