"""The Triton launchers and backend on the generic row contract (issue 18), against float64 torch maths.

Forward: per-row ``nll = lse - z_gold`` (corrected rows included), ``lse`` and ``zmean = mean_v z_v``, 0 on
unmasked rows.  Backward: per-row coefficients ``coef [3, N] = (α, γ, δ)`` give ``dz = α·softmax - γ·onehot(gold)
- δ/V``; rows with all three 0 and rows labelled ignore_index get nothing, even where their inputs are NaN.
Under TRITON_INTERPRET=1 (conftest) at tiny shapes, with tiles small enough for several vocabulary tiles and splits.
"""
import pytest
import torch
from test_ops_triton import DEVICE, _poisoned_empty, inputs, pytestmark, rel_err  # noqa: F401 (fixtures)

from tnops.backends import contract
from tnops.backends import triton as backend
from tnops.ops.config import head_config
from tnops.ops.mlm_head import mlm_head_backward, mlm_head_forward
from tnops.options import MLMOptions

N, V, E = 26, 150, 16
VARIANTS = ["bias", "no bias", "logits"]  # fused head with and without bias; given logits (weight=None)


def config(splits=3):
    return head_config(N, V, E, block_n=16, block_v=32, block_e=16, splits=splits)


def head(variant, nan_rows=None):
    """``(x, weight, bias, labels)`` of a variant; ``nan_rows``: those rows of x (hidden or logits) are NaN."""
    h, w, b, y = inputs(N, V, E, bias=variant == "bias", every=4)
    if variant == "logits":
        h, w, b = torch.nn.functional.linear(h, w), None, None
    if nan_rows is not None:
        h = h.clone()
        h[nan_rows] = float("nan")
    return h, w, b, y


def exact_logits(x, w, b):
    """float64 ``[N, V]`` logits."""
    if w is None:
        return x.double()
    return x.double() @ w.double().T + (b.double() if b is not None else 0.0)


def exact_rows(z, y):
    """float64 (nll, lse, zmean) per row, 0 on unmasked rows (whatever their logits hold)."""
    masked = y != -100
    lse = torch.logsumexp(z, 1)
    nll = lse - z.gather(1, torch.where(masked, y, 0)[:, None])[:, 0]
    return tuple(torch.where(masked, t, 0.0) for t in (nll, lse, z.mean(1)))


def complement(z, y):
    """float64 ``1 - p(gold)`` as the non-gold sum (``p_gold - 1`` cancels even in float64 on a confident row)."""
    gold = torch.where(y != -100, y, 0)[:, None]
    others = torch.exp(z - z.gather(1, gold)).scatter(1, gold, 0.0).sum(1)
    return others / (1 + others)


def exact_dz(z, y, coef):
    """float64 ``α·softmax - γ·onehot(gold) - δ/V`` on live masked rows, 0 elsewhere (selected, never multiplied);
    the gold entry as ``-α·(1 - p_gold) + (α - γ) - δ/V``."""
    live = (y != -100) & (coef != 0).any(0)
    alpha, gamma, delta = coef.double()[:, :, None]
    gold = torch.where(live, y, 0)[:, None]
    dz = alpha * torch.softmax(z, 1) - delta / z.shape[1]
    dz = dz.scatter(1, gold, -alpha * complement(z, y)[:, None] + (alpha - gamma) - delta / z.shape[1])
    return torch.where(live[:, None], dz, 0.0)


def coefficients(y):
    """Random ``(α, γ, δ)`` per row, cycling through the row kinds the contract names: all three random, α = 0,
    γ = 0, δ alone, all 0, α = γ with δ = 0 (plain CE); ignored rows get nonzero coefficients too."""
    g = torch.Generator().manual_seed(3)
    coef = torch.rand(3, y.shape[0], generator=g) * 2 - 1
    kind = torch.arange(y.shape[0]) % 6
    coef[0, kind == 1] = 0
    coef[1, kind == 2] = 0
    coef[:2, kind == 3] = 0
    coef[:, kind == 4] = 0
    coef[1, kind == 5] = coef[0, kind == 5]
    coef[2, kind == 5] = 0
    return coef.to(DEVICE)


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_rows_nll_lse_zmean(make_table, variant, splits):
    """nll, lse, zmean per row within 1e-5 of float64 (zmean relative to the row's mean |z|, its rounding scale),
    nll kept on corrected rows, exact 0 on unmasked rows whose inputs are NaN."""
    h, w, b, y = head(variant)
    first = mlm_head_forward(h, w, b, y, config=config(splits))["predictions"]
    pairs = [(int(g), int(p)) for g, p in zip(y.cpu(), first.cpu()) if g >= 0 and g != p][::2]
    table = make_table(pairs, V)
    x, w, b, y = head(variant, nan_rows=y == -100)
    out = mlm_head_forward(x, w, b, y, offsets=table.offsets.to(DEVICE), syn_ids=table.ids.to(DEVICE),
                           config=config(splits))
    z = exact_logits(x, w, b)
    nll, lse, zmean = exact_rows(z, y)
    masked = y != -100
    assert out["corrected"].sum() == len(pairs) > 0
    assert (out["nll"][out["corrected"]] > 0).all()  # not zeroed on corrected rows
    for name, want in (("nll", nll), ("lse", lse)):
        assert out[name].dtype == torch.float32
        got = out[name].double()
        assert torch.equal(got[~masked], torch.zeros_like(got[~masked]))
        assert ((got - want).abs() <= 1e-5 * want.abs() + 1e-6).all(), name
    scale = torch.nan_to_num(z.abs().mean(1), nan=0.0)
    got = out["zmean"].double()
    assert torch.equal(got[~masked], torch.zeros_like(got[~masked]))
    assert ((got - zmean).abs() <= 1e-5 * scale).all() and zmean[masked].abs().min() > 0


@pytest.mark.parametrize("complement", [True, False], ids=["complement", "no complement"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_backward_generic_coefficients(variant, complement):
    """dh, dW, db (or d_logits) for random per-row (α, γ, δ) within 1e-5 of float64; rows with all three 0 (their
    inputs NaN) and ignored rows get exactly 0."""
    x, w, b, y = head(variant)
    coef = coefficients(y)
    dead = (y == -100) | (coef == 0).all(0)
    cfg = config()
    out = mlm_head_forward(x, w, b, y, config=cfg)
    x = head(variant, nan_rows=dead)[0]  # the backward's inputs: NaN on every row without a gradient
    grads = mlm_head_backward(x, w, b, y, out["lse"], coef, config=cfg,
                              gold_complement=out["gold_complement"] if complement else None)
    dz = exact_dz(exact_logits(x, w, b), y, coef)
    assert dz.abs().sum() > 0 and dead.any() and (~dead).any()
    if w is None:
        want = (dz, None, None)
    else:
        h = torch.where(dead[:, None], 0.0, x.double())  # the dead rows' NaN reaches no gradient
        want = (dz @ w.double(), dz.T @ h, dz.sum(0) if b is not None else None)
    for got, exact in zip(grads, want, strict=True):
        assert (got is None) == (exact is None)
        if got is not None:
            assert torch.isfinite(got).all() and rel_err(got, exact) < 1e-5
    assert torch.equal(grads[0][dead], torch.zeros_like(grads[0][dead]))


def test_confident_head_keeps_the_gold_entry_exact():
    """hidden = 8·W[gold] (p(gold) → 1): every gold entry of d_logits, ``-α·(1 - p_gold) + (α - γ) - δ/V``, within
    1e-5 of the size of its terms (so α = γ, δ = 0 rows, where it is ~1e-10, relative), and the fused head's
    gradients of those rows within 1e-5 of float64."""
    g = torch.Generator().manual_seed(8)
    w = torch.randn(V, E, generator=g)
    w = (3 * w / w.norm(dim=1, keepdim=True)).to(DEVICE)  # |w| = 3: z_gold = 72, the others 72·cos
    y = torch.randint(0, V, (N,), generator=g).to(DEVICE)
    y[::5] = -100
    h = 8 * w[y.clamp_min(0)]
    logits = h @ w.T
    coef = coefficients(y)
    out = mlm_head_forward(logits, None, None, y, config=config())
    d_logits = mlm_head_backward(logits, None, None, y, out["lse"], coef, gold_complement=out["gold_complement"],
                                 config=config())[0]
    z = logits.double()
    live = (y != -100) & (coef != 0).any(0)
    gold = torch.where(live, y, 0)[:, None]
    rest = complement(z, y)
    assert rest[live].max() < 1e-5 and rest[live].min() < 1e-14
    alpha, gamma, delta = coef.double()
    terms = torch.stack([-alpha * rest, alpha - gamma, -delta / V])
    want, size = terms.sum(0), terms.abs().sum(0)
    got = d_logits.gather(1, gold)[:, 0].double()
    assert ((got - want).abs()[live] <= 1e-5 * size[live]).all()
    plain = torch.where(live & (coef[0] == coef[1]) & (coef[2] == 0), coef[0], 0.0)  # α = γ, δ = 0 rows alone
    plain = torch.stack([plain, plain, torch.zeros_like(plain)])
    fused = mlm_head_forward(h, w, None, y, config=config())
    grads = mlm_head_backward(h, w, None, y, fused["lse"], plain, gold_complement=fused["gold_complement"],
                              config=config())[:2]
    dz = exact_dz(exact_logits(h, w, None), y, plain)
    for got, exact in zip(grads, (dz @ w.double(), dz.T @ h.double()), strict=True):
        assert rel_err(got, exact) < 1e-5


def test_backend_module_serves_the_row_contract():
    """``tnops.backends.triton``: the contract's signatures, MLMRows(nll, lse, zmean, ..., grads=None), and
    ``mlm_backward(coef [3, N])`` = the launcher with the forward's 1 - p(gold), SR gradient included."""
    assert contract.problems(backend) is None and backend.FUSES_GRADIENTS is False
    h, w, b, y = head("bias")
    emb = torch.randn(V, 8, device=DEVICE)
    options = MLMOptions(prediction="sample", seed=5, sr_weight=0.5)
    rows = backend.mlm_forward(h, w, b, y, None, None, emb, options, (True, True, True), (1.0, 0.0, 1.0, 0.0))
    direct = mlm_head_forward(h, w, b, y, sr_embedding=emb, prediction="sample", seed=5)
    assert rows.grads is None and rows.sr_aux.shape == (backend.aux_rows(True), N)
    for name in ("nll", "lse", "zmean", "predictions", "corrected", "sr"):
        assert torch.equal(getattr(rows, name), direct[name]), name
    coef = coefficients(y)
    sr_coef = torch.rand(N, device=DEVICE)
    got = backend.mlm_backward(h, w, b, y, rows.lse, coef, emb, rows.predictions, sr_coef, rows.sr_aux, options,
                               (True, True, True, True))
    want = mlm_head_backward(h, w, b, y, rows.lse, coef, gold_complement=direct["gold_complement"])
    for g, e in zip(got[:3], want, strict=True):
        assert torch.equal(g, e)
    assert got[3].shape == emb.shape and got[3].abs().sum() > 0
