"""Label smoothing and z-loss (issue 18) on every backend, composed from the backends' per-row statistics.

The options never reach a backend (``test_no_backend_names_an_option``): each backend returns ``nll``, ``lse`` and
``zmean`` per row and turns generic coefficients into gradients; ``tnops.functional`` composes the losses.
"""
import pathlib

import pytest
import torch
import torch.nn.functional as F
from backend_check import check_backend, confident_inputs, make_inputs, table_hitting_predictions

import tnops
import tnops.nn
from tnops import backends, reference

BACKENDS = backends.available_backends()
HALF = [b for b in BACKENDS if b in ("torch", "native") or (b == "triton" and torch.cuda.is_available())]
ROOT = pathlib.Path(__file__).resolve().parents[1]
OPTIONS = [(0.1, 0.0), (0.0, 1e-3), (0.25, 1e-2)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.6])
def test_label_smoothing_is_pytorchs(backend, reduction, eps):
    """No synonyms: tnops with label_smoothing=ε is F.cross_entropy(label_smoothing=ε), ignore_index rows excluded;
    loss and every gradient against float64 PyTorch, fp32 within 1e-5."""
    torch.manual_seed(0)
    hidden, weight, bias, labels = make_inputs(45, 300, 16)
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    out = tnops.linear_mlm_loss(leaves[0], leaves[1], labels, bias=leaves[2], label_smoothing=eps,
                                reduction=reduction, backend=backend)
    exact = [t.double().requires_grad_() for t in (hidden, weight, bias)]
    want = F.cross_entropy(F.linear(*exact), labels, label_smoothing=eps, reduction=reduction)
    if reduction == "none":
        want = torch.where(labels != -100, want, 0)
    upstream = torch.randn(want.shape, dtype=torch.float64)
    torch.testing.assert_close(out.mlm_loss.double(), want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss.double(), want.detach(), rtol=1e-5, atol=1e-6)
    assert not out.z_loss.any()
    got = torch.autograd.grad((out.loss * upstream.float()).sum(), leaves)
    expected = torch.autograd.grad((want * upstream).sum(), exact)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-5 * e.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps,lam", OPTIONS)
def test_options_with_hard_correction_match_the_reference(backend, make_table, reduction, eps, lam):
    """Smoothing and z-loss apply to kept rows only (HC on, Gumbel-max samples, SR): every output and gradient
    against the float64 spec (tests/backend_check.py), fp32 within 1e-5."""
    torch.manual_seed(1)
    hidden, weight, bias, labels = make_inputs(63, 500, 24)
    kw = dict(prediction="sample", seed=5, sr_weight=0.5, reduction=reduction, label_smoothing=eps, z_loss=lam)
    first = tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, backend=backend, **kw)
    kw["synonyms"] = table_hitting_predictions(make_table, labels, first.predictions, 500)
    out, _ = check_backend(backend, hidden, weight, bias, labels, **kw)
    assert out.corrected.any()
    kept = (labels != -100) & ~out.corrected
    lse = torch.logsumexp(F.linear(hidden.double(), weight.double(), bias.double()), -1)
    z_rows = torch.where(kept, lam * lse**2, 0)
    want_z = z_rows if reduction == "none" else z_rows.sum() / (kept.sum() if reduction == "mean" else 1)
    torch.testing.assert_close(out.z_loss.double(), want_z, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_options_on_a_confident_head(backend):
    """A trained head (p(gold) → 1): the gradient's gold entry α·p - γ is formed without cancellation."""
    torch.manual_seed(2)
    hidden, weight, bias, labels = confident_inputs(40, 300, 16, torch.float32)
    check_backend(backend, hidden, weight, bias, labels, label_smoothing=0.05, z_loss=1e-4)


@pytest.mark.parametrize("backend", HALF)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_options_in_half_precision(backend, dtype):
    """Half inputs: error ≤ 2 × plain PyTorch's own in that dtype + an atol scaled by the reference's magnitude."""
    torch.manual_seed(3)
    hidden, weight, bias, labels = make_inputs(40, 300, 16, dtype)
    check_backend(backend, hidden, weight, bias, labels, label_smoothing=0.1, z_loss=1e-3, sr_weight=0.3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_given_logits(backend):
    """``mlm_loss`` (logits already made) with both options: the same as the reference, gradient to the logits."""
    torch.manual_seed(4)
    logits = torch.randn(30, 200) * 3
    labels = torch.randint(0, 200, (30,))
    labels[::3] = -100
    x = logits.clone().requires_grad_()
    out = tnops.mlm_loss(x, labels, label_smoothing=0.2, z_loss=1e-2, backend=backend)
    xd = logits.double().requires_grad_()
    ref = reference.mlm_loss(xd, labels, label_smoothing=0.2, z_loss=1e-2)
    for name in ("loss", "mlm_loss", "z_loss"):
        torch.testing.assert_close(getattr(out, name).double(), getattr(ref, name), rtol=1e-5, atol=1e-7)
    (g,), (e,) = torch.autograd.grad(out.loss, x), torch.autograd.grad(ref.loss, xd)
    torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_fullgraph_equals_eager(backend):
    torch.manual_seed(5)
    hidden, weight, bias, labels = make_inputs(24, 100, 8)

    def step(h, w, b):
        out = tnops.linear_mlm_loss(h, w, labels, bias=b, label_smoothing=0.1, z_loss=1e-3, backend=backend)
        return out.loss, out.mlm_loss, out.z_loss

    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="aot_eager")):
        leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
        values = fn(*leaves)
        results.append((values, torch.autograd.grad(values[0], leaves)))
    (eager, eager_grads), (compiled, compiled_grads) = results
    for a, b in zip(eager + tuple(eager_grads), compiled + tuple(compiled_grads)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_parts_of_a_z_loss_objective_are_reported_values():
    """With z_loss > 0 one gradient serves the whole objective: loss carries it, mlm_loss and z_loss are values
    (and loss = mlm_loss + z_loss); with z_loss = 0, mlm_loss carries its gradient as before."""
    hidden, weight, _, labels = make_inputs(20, 50, 8)
    w = weight.requires_grad_()
    out = tnops.linear_mlm_loss(hidden, w, labels, z_loss=1e-2)
    assert out.loss.requires_grad and not out.mlm_loss.requires_grad and not out.z_loss.requires_grad
    torch.testing.assert_close(out.loss, out.mlm_loss + out.z_loss)
    plain = tnops.linear_mlm_loss(hidden, w, labels, label_smoothing=0.1)
    assert plain.mlm_loss.requires_grad and not plain.z_loss.any()


def test_modules_take_the_options():
    torch.manual_seed(6)
    logits, labels = torch.randn(12, 40), torch.randint(0, 40, (12,))
    module = tnops.nn.TrueNegativeCrossEntropy(label_smoothing=0.3)
    torch.testing.assert_close(module(logits, labels), torch.nn.CrossEntropyLoss(label_smoothing=0.3)(logits, labels))
    linear = tnops.nn.LinearMLMLoss(z_loss=0.5)
    hidden, weight = torch.randn(12, 8), torch.randn(40, 8)
    out = linear(hidden, weight, labels)
    lse = torch.logsumexp(hidden @ weight.T, -1)
    torch.testing.assert_close(out.z_loss, 0.5 * (lse**2).mean())


@pytest.mark.parametrize("name,value,error,match", [
    ("label_smoothing", 1.0, ValueError, r"label_smoothing: expected 0 <= label_smoothing < 1, got 1.0"),
    ("label_smoothing", -0.1, ValueError, r"label_smoothing: expected a number >= 0"),
    ("label_smoothing", float("nan"), ValueError, r"label_smoothing: expected a finite number"),
    ("label_smoothing", "0.1", TypeError, r"label_smoothing: expected a real number, got str"),
    ("z_loss", -1e-4, ValueError, r"z_loss: expected a number >= 0"),
    ("z_loss", float("inf"), ValueError, r"z_loss: expected a finite number"),
    ("z_loss", None, TypeError, r"z_loss: expected a real number, got NoneType"),
])
def test_bad_options_are_named(name, value, error, match):
    hidden, weight, _, labels = make_inputs(6, 20, 4)
    with pytest.raises(error, match=match):
        tnops.linear_mlm_loss(hidden, weight, labels, **{name: value})
    with pytest.raises(error, match=match):
        tnops.mlm_loss(torch.randn(6, 20), labels, **{name: value})
    with pytest.raises(error, match=match):
        tnops.nn.LinearMLMLoss(**{name: value})


def test_no_backend_names_an_option():
    """The acceptance rule of issue 18: an option is composed above the backends, so none of their files names one."""
    files = [p for folder in ("tnops/backends", "tnops/ops", "csrc") for p in (ROOT / folder).rglob("*")
             if p.suffix in (".py", ".cpp", ".h", ".cu")]
    assert files
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if any(word in p.read_text() for word in ("label_smoothing", "z_loss", "smoothing"))]
    assert not offenders, offenders
