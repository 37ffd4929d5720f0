"""ELECTRA's optimiser: Adam without bias correction, and updates skipped on the device (step_where)."""
import pytest
import torch

from electra.optim import AdamNoBiasCorrection, make_optimizer, step_where


def model_with_grads(seed=0, poison=False):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.LayerNorm(4))
    model(torch.randn(3, 5)).square().sum().backward()
    if poison:
        model[0].weight.grad[0, 0] = float("nan")
    return model


def snapshot(model, optimizer):
    state = [t.clone() for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return [p.detach().clone() for p in model.parameters()], state


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_adam_update_matches_the_formula_without_bias_correction():
    model = model_with_grads()
    p, g = model[0].weight.detach().clone(), model[0].weight.grad.clone()
    make_optimizer(model, "adam", lr=0.1, weight_decay=0.01, eps=1e-6).step()
    m, v = 0.1 * g, 0.001 * g * g
    torch.testing.assert_close(model[0].weight, p - 0.1 * (m / (v.sqrt() + 1e-6) + 0.01 * p))


def test_apply_true_is_the_plain_step_and_apply_false_changes_nothing():
    plain, masked = model_with_grads(), model_with_grads()
    opt_plain = make_optimizer(plain, "adam", 0.1, 0.01, 1e-6)
    opt_masked = make_optimizer(masked, "adam", 0.1, 0.01, 1e-6)
    opt_plain.step()
    opt_masked.step(apply=torch.tensor(True))
    assert same(snapshot(plain, opt_plain)[0], snapshot(masked, opt_masked)[0])  # bit for bit
    assert same(snapshot(plain, opt_plain)[1], snapshot(masked, opt_masked)[1])
    for p in masked.parameters():
        p.grad.fill_(float("nan"))
    before = snapshot(masked, opt_masked)
    opt_masked.step(apply=torch.tensor(False))
    after = snapshot(masked, opt_masked)
    assert same(before[0], after[0]) and same(before[1], after[1])  # NaN gradients never reach the state


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_step_where_skips_a_non_finite_step_for_every_optimiser(name):
    model = model_with_grads(poison=True)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.1) if name == "sgd"
                 else make_optimizer(model, name, 0.1, 0.01, 1e-6))
    before = snapshot(model, optimizer)
    step_where(optimizer, torch.tensor(False))
    assert same(before[0], snapshot(model, optimizer)[0])
    assert not hasattr(optimizer, "found_inf")  # the fused kernel's flag does not outlive the call
    model.zero_grad()
    model(torch.randn(3, 5)).square().sum().backward()
    step_where(optimizer, torch.tensor(True))
    assert not same(before[0], snapshot(model, optimizer)[0])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if name == "adamw":
        assert optimizer.defaults["fused"]  # the device-side skip, not a host read


def test_adam_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="invalid Adam hyper-parameters"):
        AdamNoBiasCorrection(model_with_grads().parameters(), lr=-1.0)
