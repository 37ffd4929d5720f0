"""Module forms: drop-in use in BERT-style code and the fused-head module."""
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
