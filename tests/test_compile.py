"""torch.compile(fullgraph=True) traces the public losses through the tnops:: custom ops, on every backend,
and gives the outputs and gradients of eager mode (both run the same ops)."""
import pytest
import torch

import tnops
from tnops import backends

torch._dynamo.config.cache_size_limit = 64


def inputs():
    torch.manual_seed(0)
    h = torch.randn(30, 16, requires_grad=True)
    w = torch.randn(200, 16, requires_grad=True)
    b = torch.randn(200, requires_grad=True)
    y = torch.randint(0, 200, (30,))
    y[::3] = -100
    return h, w, b, y


@pytest.mark.parametrize("backend", backends.available_backends())
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_mlm_loss_compiles_without_graph_breaks(backend, reduction):
    h, w, b, y = inputs()
    table = tnops.SynonymTable.from_pairs(torch.randint(0, 200, (3000,)), torch.randint(0, 200, (3000,)), 200)

    def loss(h, w, b, y):
        out = tnops.linear_mlm_loss(h, w, y, bias=b, synonyms=table, prediction="sample", seed=4, sr_weight=0.5,
                                    reduction=reduction, backend=backend)
        return out.loss, out.predictions, out.corrected

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got, want = compiled(h, w, b, y), loss(h, w, b, y)
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)  # the same ops compute both: identical
    up = torch.randn_like(want[0])
    for g, e in zip(torch.autograd.grad((got[0] * up).sum(), (h, w, b)),
                    torch.autograd.grad((want[0] * up).sum(), (h, w, b))):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_other_losses_and_a_drawn_seed_compile():
    h, w, b, y = inputs()
    logits = (h @ w.T).detach().requires_grad_()

    def losses(logits, y):
        mlm = tnops.mlm_loss(logits, y, prediction="sample", sr_weight=0.3, sr_embedding=w)  # seed drawn in-graph
        x = logits[:, 0]
        rtd = tnops.rtd_loss(x, y.clamp_min(0), y.clamp_min(0).flip(0), torch.ones_like(y), mlm.corrected)
        sr = tnops.sr_loss(w, y, mlm.predictions)
        return mlm.loss + rtd + sr

    total = torch.compile(losses, fullgraph=True, backend="aot_eager")(logits, y)
    total.backward()
    assert torch.isfinite(total) and logits.grad.abs().sum() > 0
