"""Module forms: drop-in use in BERT-style code and the fused-head module."""
import pytest
import torch
from torch import nn

import tnops


def test_true_negative_cross_entropy_is_a_drop_in(make_table):
    logits = torch.randn(2, 6, 30, requires_grad=True)
    labels = torch.randint(0, 30, (2, 6))
    labels[0, :3] = -100
    plain = nn.CrossEntropyLoss()(logits.view(-1, 30), labels.view(-1))
    ours = tnops.nn.TrueNegativeCrossEntropy()(logits.view(-1, 30), labels.view(-1))
    torch.testing.assert_close(ours, plain)
    first = tnops.nn.TrueNegativeCrossEntropy()
    first(logits.view(-1, 30), labels.view(-1))
    pred = first.last_output.predictions
    pairs = [(int(g), int(p)) for g, p in zip(labels.view(-1), pred) if g >= 0 and g != p]
    loss_fct = tnops.nn.TrueNegativeCrossEntropy(make_table(pairs, 30))
    loss = loss_fct(logits.view(-1, 30), labels.view(-1))
    assert loss_fct.last_output.corrected.sum() == len(pairs)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert "pairs" in repr(loss_fct)


def test_true_negative_cross_entropy_trains_the_sr_table():
    emb = nn.Embedding(30, 4)
    loss_fct = tnops.nn.TrueNegativeCrossEntropy(sr_weight=1.0, sr_embedding=emb.weight)
    logits = torch.randn(8, 30, requires_grad=True)
    loss_fct(logits, torch.randint(0, 30, (8,))).backward()
    assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0


def test_linear_mlm_loss_module_matches_functional():
    hidden, weight, bias = torch.randn(3, 5, 8), torch.randn(40, 8), torch.randn(40)
    labels = torch.randint(0, 40, (3, 5))
    module = tnops.nn.LinearMLMLoss(prediction="sample", sr_weight=0.2)
    out = module(hidden, weight, labels, bias, seed=3)
    ref = tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, prediction="sample", sr_weight=0.2, seed=3)
    torch.testing.assert_close(out.loss, ref.loss)
    assert torch.equal(out.predictions, ref.predictions) and module.last_output is out


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 6, 6), (3, 5, 2, 7), (9,)])
def test_true_negative_cross_entropy_follows_the_class_dimension_of_torch(reduction, shape):
    """[N, C, d1, ...] is read as nn.CrossEntropyLoss reads it (class dimension 1), also when C == d1."""
    torch.manual_seed(0)
    logits = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    classes = shape[1] if len(shape) > 1 else shape[0]
    label_shape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
    labels = torch.randint(0, classes, label_shape)
    if labels.dim():
        labels.view(-1)[::3] = -100
    got = tnops.nn.TrueNegativeCrossEntropy(reduction=reduction)(logits, labels)
    want = torch.nn.CrossEntropyLoss(reduction=reduction)(logits, labels)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    up = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad((got * up).sum(), logits)[0],
                               torch.autograd.grad((want * up).sum(), logits)[0], rtol=1e-10, atol=1e-12)


def test_true_negative_cross_entropy_refuses_labels_of_another_layout():
    loss = tnops.nn.TrueNegativeCrossEntropy()
    with pytest.raises(ValueError, match=r"labels: expected shape \(2, 7\) for logits \(2, 5, 7\)"):
        loss(torch.randn(2, 5, 7), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels: expected a 0-d tensor"):
        loss(torch.randn(5), torch.zeros(1, dtype=torch.long))
    with pytest.raises(TypeError, match="logits: expected a torch.Tensor"):
        loss([0.1, 0.2], torch.zeros(1, dtype=torch.long))
