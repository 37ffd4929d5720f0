"""The native ops (csrc/) on the generic row contract, called directly and held to float64 torch maths written here:
per-row nll / lse / zmean, and the gradients of Σ_r f_r with df_r/dz_r = α_r·softmax(z_r) - γ_r·onehot(gold_r) -
δ_r/V, from the backward's coef [3, N] and from the forward's fused (a, b, c, d) (α = a + b·lse, γ = c, δ = d on kept
rows)."""
import pytest
import torch

from tnops import backends

pytestmark = pytest.mark.skipif(backends.unavailable_reason("native") is not None,
                                reason=f"native backend unavailable: {backends.unavailable_reason('native')}")

IGNORE = -100
TOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.bfloat16: 2e-2}


def logits64(inputs, weight, bias):
    z = inputs.double() if weight is None else inputs.double() @ weight.double().T
    return z if bias is None else z + bias.double()


def rows64(inputs, weight, bias, labels):
    """float64 nll, lse, zmean (0 on ignored rows)."""
    z = logits64(inputs, weight, bias)
    masked = labels != IGNORE
    gold = labels.clamp_min(0)
    lse = torch.logsumexp(z, 1)
    # nll = log Σ_v exp(z_v - z_gold), the gold term (1) apart: exact where p(gold) → 1
    shifted = z - z.gather(1, gold[:, None])
    nll = torch.log1p(shifted.scatter(1, gold[:, None], float("-inf")).exp().sum(1))
    zero = torch.zeros_like(lse)
    return (torch.where(masked, nll, zero), torch.where(masked, lse, zero), torch.where(masked, z.mean(1), zero))


def dz64(z, labels, coef):
    """α·p - γ·onehot - δ/V in float64, the gold entry as -α·(1 - p_gold) + (α - γ) with 1 - p_gold summed apart;
    rows whose coefficients are all 0 get 0 (never 0·NaN)."""
    alpha, gamma, delta = (c.double()[:, None] for c in coef)
    gold = labels.clamp_min(0)[:, None]
    p = torch.softmax(z, 1)
    q = p.scatter(1, gold, 0.0).sum(1, keepdim=True)  # 1 - p_gold
    dz = alpha * p - delta / z.shape[1]
    dz = dz.scatter(1, gold, -alpha * q + (alpha - gamma) - delta / z.shape[1])
    live = (coef != 0).any(0)[:, None]
    return torch.where(live, dz, 0.0)


def grads64(inputs, weight, bias, labels, coef):
    dz = dz64(logits64(inputs, weight, bias), labels, coef)
    if weight is None:
        return dz, None, None
    return dz @ weight.double(), dz.T @ inputs.double(), None if bias is None else dz.sum(0)


def rel(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def assert_grads(got, want, tol):
    for name, g, w in zip(("d_inputs", "d_weight", "d_bias"), got, want):
        if w is not None:
            assert torch.isfinite(g).all(), name
            assert rel(g, w) <= tol, (name, rel(g, w))


def make(n=13, vocab=41, width=12, dtype=torch.float32, weight=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, width if weight else vocab, generator=g, dtype=torch.float64) * (1 if weight else 2)
    w = torch.randn(vocab, width, generator=g, dtype=torch.float64) * width**-0.5 * 3 if weight else None
    b = torch.randn(vocab, generator=g, dtype=torch.float64) if bias else None
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[::5] = IGNORE
    cast = (lambda t: None if t is None else t.to(dtype))
    return cast(inputs), cast(w), cast(b), labels


def random_coef(labels, dtype, seed=1):
    """Random (α, γ, δ) per row, with rows α = 0, γ = 0, δ = 0, all zero, and 0 on ignored rows."""
    g = torch.Generator().manual_seed(seed)
    coef = torch.rand(3, labels.shape[0], generator=g, dtype=torch.float64) * 2 - 0.5
    coef[0, 1] = 0          # α = 0 (γ, δ ≠ 0)
    coef[1, 2] = 0          # γ = 0
    coef[2, 3] = 0          # δ = 0
    coef[0:2, 4] = 0        # only δ
    coef[:, 6] = 0          # no work at all
    coef[:, labels == IGNORE] = 0
    return coef.to(torch.float64 if dtype == torch.float64 else torch.float32)


def forward(inputs, w, b, labels, want=(False, False, False), coefficients=(1.0, 0.0, 1.0, 0.0), chunk=4,
            table=(None, None), sample=False):
    return torch.ops.tnops.mlm_head_native(inputs, w, b, labels, None, *table, 5, sample, 1.0, False, IGNORE, *want,
                                           chunk, *coefficients)


def backward(inputs, w, b, labels, lse, coef, chunk=4):
    want = (True, w is not None, b is not None)
    return torch.ops.tnops.mlm_head_native_backward(inputs, w, b, labels, lse, coef, *want, chunk)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["head", "no-bias", "logits"])
def test_rows_match_float64(dtype, variant):
    """nll, lse, zmean per row (0 on ignored rows); nll within tol of |lse| (lse - z_gold rounds at |lse|)."""
    inputs, w, b, labels = make(dtype=dtype, weight=variant != "logits", bias=variant == "head")
    nll, lse, zmean, pred, corr, *_ = forward(inputs, w, b, labels)
    want_nll, want_lse, want_zmean = rows64(inputs, w, b, labels)
    z = logits64(inputs, w, b)
    tol = TOL[dtype]
    assert nll.dtype == lse.dtype == zmean.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(lse.double(), want_lse, rtol=tol, atol=tol)
    torch.testing.assert_close(nll.double(), want_nll, rtol=tol, atol=tol * want_lse.abs().max().item())
    scale = z.abs().amax(1)  # zmean rounds at the size of the row's entries
    assert ((zmean.double() - want_zmean).abs() <= tol * scale).all()
    assert (zmean[labels == IGNORE] == 0).all() and (zmean[labels != IGNORE] != 0).all()


def test_corrected_rows_keep_their_nll_and_get_no_gradient():
    """Hard correction no longer zeroes nll (it is applied above, from `corrected`); a NaN row that is corrected
    contributes nothing to any gradient (selected out), and a NaN row that is ignored is never read."""
    inputs, w, b, labels = make(n=10)
    pred = forward(inputs, w, b, labels)[3]
    row = next(r for r in range(10) if labels[r] != IGNORE and pred[r] != labels[r])
    inputs[row, 3] = float("nan")
    inputs[0, 0] = float("nan")  # labels[0] is ignored
    pred = forward(inputs, w, b, labels)[3]
    offsets = torch.zeros(42, dtype=torch.int32)
    offsets[int(labels[row]) + 1:] = 1
    table = (offsets, pred[row:row + 1].int())
    nll, lse, zmean, pred, corr, dh, dw, db = forward(inputs, w, b, labels, (True, True, True), table=table)
    assert corr.tolist() == [r == row for r in range(10)]
    assert torch.isnan(nll[row])  # the row's own statistics are NaN; its nll is not zeroed
    kept = (labels != IGNORE) & ~corr
    coef = torch.stack([kept.double(), kept.double(), torch.zeros(10, dtype=torch.float64)])
    clean = inputs.clone()
    clean[row] = 0
    clean[0] = 0
    want = grads64(clean, w, b, labels, coef)
    assert_grads((dh, dw, db), want, 1e-5)
    assert (dh[row] == 0).all() and (dh[0] == 0).all()
    ok_nll, ok_lse, _ = rows64(clean, w, b, labels)
    torch.testing.assert_close(nll[kept].double(), ok_nll[kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["head", "no-bias", "logits"])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_backward_random_coefficients(dtype, variant, chunk):
    inputs, w, b, labels = make(dtype=dtype, weight=variant != "logits", bias=variant == "head")
    lse = forward(inputs, w, b, labels)[1]
    coef = random_coef(labels, dtype)
    got = backward(inputs, w, b, labels, lse, coef, chunk)
    assert_grads(got, grads64(inputs, w, b, labels, coef), TOL[dtype])
    assert (got[0][6] == 0).all() and (got[0][labels == IGNORE] == 0).all()


def test_backward_alpha_zero_row_never_reads_its_softmax():
    """α = 0 with γ or δ ≠ 0: dz = -γ·onehot - δ/V itself (the row's NaN logits never reach it)."""
    inputs, _, _, labels = make(weight=False, bias=False)
    coef = random_coef(labels, torch.float32)
    inputs[1, 7] = float("nan")  # coef[0, 1] == 0
    lse = forward(inputs, None, None, labels)[1]
    dz = backward(inputs, None, None, labels, lse, coef)[0]
    want = torch.full((41,), -float(coef[2, 1]) / 41, dtype=torch.float64)
    want[labels[1]] -= float(coef[1, 1])
    torch.testing.assert_close(dz[1].double(), want, rtol=1e-6, atol=1e-9)


def test_backward_half_inputs_loosely():
    inputs, w, b, labels = make(dtype=torch.bfloat16)
    lse = forward(inputs, w, b, labels)[1]
    coef = random_coef(labels, torch.bfloat16)
    got = backward(inputs, w, b, labels, lse, coef)
    assert all(g.dtype == torch.bfloat16 for g in got)
    assert_grads(got, grads64(inputs, w, b, labels, coef), TOL[torch.bfloat16])
    nll, lse, zmean = forward(inputs, w, b, labels)[:3]
    for got_row, want_row in zip((nll, lse, zmean), rows64(inputs, w, b, labels)):
        assert rel(got_row, want_row) <= TOL[torch.bfloat16]  # the half GEMM rounds z to bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["head", "no-bias", "logits"])
@pytest.mark.parametrize("coefficients", [(1.0, 0.0, 1.0, 0.0), (1.0, 0.3, 0.9, 0.1), (0.0, 0.0, 0.7, 0.2)])
def test_fused_forward_matches_float64_and_the_backward(dtype, variant, coefficients):
    """The forward's fused gradients for (a, b, c, d) = those of the backward given α = a + b·lse, γ = c, δ = d on
    kept rows, and those of float64 maths."""
    inputs, w, b, labels = make(dtype=dtype, weight=variant != "logits", bias=variant == "head")
    want_flags = (True, w is not None, b is not None)
    nll, lse, zmean, pred, corr, *fused = forward(inputs, w, b, labels, want_flags, coefficients)
    a, bb, c, d = coefficients
    kept = ((labels != IGNORE) & ~corr).to(lse.dtype)
    coef = torch.stack([kept * (a + bb * lse), kept * c, kept * d])
    want = grads64(inputs, w, b, labels, coef.double())
    assert_grads([g if f else None for g, f in zip(fused, want_flags)], want, TOL[dtype])
    again = backward(inputs, w, b, labels, lse, coef)
    for g, h, f in zip(fused, again, want_flags):
        if f:
            assert rel(g, h) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight", [True, False])
def test_confident_head_gold_entry_stays_exact(dtype, weight):
    """hidden ≈ c·W[gold] (p(gold) → 1): nll = log1p(Σ_{v≠gold} e_v) and dz's gold entry -α·(1 - p_gold) + (α - γ)
    stay within tol relative per row, where lse - z_gold and α·p_gold - γ would cancel.  Logits given: d inputs is
    dz itself, checked entry by entry at the gold column."""
    g = torch.Generator().manual_seed(3)
    n, vocab, width = 12, 300, 32
    w = torch.randn(vocab, width, generator=g, dtype=torch.float64) * width**-0.5
    labels = torch.randint(0, vocab, (n,), generator=g)
    c = torch.empty(n, dtype=torch.float64).uniform_(8.0, 40.0, generator=g)
    hidden = c[:, None] * w[labels] * 2 + 0.01 * torch.randn(n, width, generator=g, dtype=torch.float64)
    inputs, w = (hidden.to(dtype), w.to(dtype)) if weight else (logits64(hidden, w, None).to(dtype), None)
    labels[0] = IGNORE
    nll, lse = forward(inputs, w, None, labels)[:2]
    want_nll = rows64(inputs, w, None, labels)[0]
    assert 0 < want_nll[1:].max() < 1e-4
    torch.testing.assert_close(nll.double(), want_nll, rtol=TOL[dtype], atol=0)
    coef = torch.ones(3, n, dtype=lse.dtype)
    coef[2] = 0
    coef[:, 5] = torch.tensor([1.0, 0.5, 0.0])  # α ≠ γ
    coef[:, 0] = 0
    got = backward(inputs, w, None, labels, lse, coef)
    want = grads64(inputs, w, None, labels, coef.double())
    assert_grads(got, want, TOL[dtype])
    if not weight:
        gold = labels.clamp_min(0)[:, None]
        torch.testing.assert_close(got[0].gather(1, gold).double(), want[0].gather(1, gold), rtol=TOL[dtype], atol=0)


@pytest.mark.parametrize("name,value,error,match", [
    ("shape", torch.zeros(13), ValueError, r"coef: expected a CPU tensor \[3, 13\]"),
    ("rows", torch.zeros(2, 13), ValueError, r"coef: expected a CPU tensor \[3, 13\]"),
    ("dtype", torch.zeros(3, 13, dtype=torch.long), TypeError, r"coef: expected a float tensor"),
])
def test_backward_checks_coef(name, value, error, match):
    inputs, w, b, labels = make()
    with pytest.raises(error, match=match):
        backward(inputs, w, b, labels, torch.zeros(13), value)


def test_backend_functions_pass_coefficients_and_coef():
    """tnops.backends.native: mlm_forward(..., coefficients) -> MLMRows with nll/lse/zmean; mlm_backward(..., coef)."""
    from tnops.backends import native
    from tnops.options import MLMOptions

    inputs, w, b, labels = make()
    options = MLMOptions()
    rows = native.mlm_forward(inputs, w, b, labels, None, None, None, options, (True, True, False),
                              (1.0, 0.3, 0.9, 0.1))
    assert rows.grads[2] is None
    for got, want in zip((rows.nll, rows.lse, rows.zmean), rows64(inputs, w, b, labels)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    kept = ((labels != IGNORE) & ~rows.corrected).float()
    coef = torch.stack([kept * (1 + 0.3 * rows.lse), kept * 0.9, kept * 0.1])
    out = native.mlm_backward(inputs, w, b, labels, rows.lse, coef, None, rows.predictions, torch.zeros(13), None,
                              options, (True, True, False, False))
    assert out[2] is None and out[3] is None
    assert_grads(out[:2], grads64(inputs, w, b, labels, coef.double())[:2], 1e-5)
    assert_grads(rows.grads[:2], grads64(inputs, w, b, labels, coef.double())[:2], 1e-5)
