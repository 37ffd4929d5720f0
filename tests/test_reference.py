"""The eager spec against values worked out by hand on tiny inputs."""
import math

import pytest
import torch

from tnops import reference

LOGITS = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
LABELS = torch.tensor([2, 1])
EMBEDDING = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_cross_entropy_and_argmax_by_hand():
    out = reference.mlm_loss(LOGITS, LABELS)
    row0 = math.log(math.e + math.e**2 + math.e**3) - 3.0
    row1 = math.log(3.0)
    assert out.mlm_loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert out.predictions.tolist() == [2, 0]  # a three-way tie goes to the lowest id
    assert out.corrected.tolist() == [False, False]
    assert out.sr_loss.item() == 0.0


def test_hard_correction_drops_synonym_rows(make_table):
    table = make_table([(1, 0)], 3)  # token 0 is a listed synonym of token 1
    out = reference.mlm_loss(LOGITS, LABELS, synonyms=table)
    assert out.corrected.tolist() == [False, True]
    assert out.mlm_loss.item() == pytest.approx(math.log(math.e + math.e**2 + math.e**3) - 3.0, rel=1e-6)
    # the relation is directed: 1 listed under 0 does not correct a gold 1 predicted as 0
    assert not reference.mlm_loss(LOGITS, LABELS, synonyms=make_table([(0, 1)], 3)).corrected.any()


def test_soft_regularization_by_hand():
    out = reference.mlm_loss(LOGITS, LABELS, sr_weight=0.25, sr_embedding=EMBEDDING)
    # row 0 predicts its gold (distance 0); row 1: 1 - cos([0,1],[1,0]) = 1
    assert out.sr_loss.item() == pytest.approx(0.5)
    assert out.loss.item() == pytest.approx(out.mlm_loss.item() + 0.25 * 0.5, rel=1e-6)
    sr = reference.sr_loss(EMBEDDING, torch.tensor([1]), torch.tensor([2]))
    assert sr.item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_sr_gradient_flows_into_both_rows():
    emb = EMBEDDING.clone().requires_grad_()
    reference.sr_loss(emb, torch.tensor([1]), torch.tensor([2])).backward()
    assert emb.grad[1].abs().sum() > 0 and emb.grad[2].abs().sum() > 0 and emb.grad[0].abs().sum() == 0


def test_rtd_by_hand_with_label_flip():
    logits = torch.tensor([0.0, 2.0, 5.0])
    corrupted, original = torch.tensor([5, 6, 9]), torch.tensor([5, 7, 9])
    mask = torch.tensor([1, 1, 0])
    plain = reference.rtd_loss(logits, corrupted, original, mask)
    assert plain.item() == pytest.approx((math.log(2) + math.log1p(math.exp(-2))) / 2, rel=1e-6)
    flipped = reference.rtd_loss(logits, corrupted, original, mask, corrected=torch.tensor([False, True, False]))
    assert flipped.item() == pytest.approx((math.log(2) + math.log1p(math.exp(2))) / 2, rel=1e-6)


def test_sentence_sr_by_hand():
    h_p = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    h_s = torch.tensor([[0.0, math.log(3.0)], [7.0, 7.0]])
    kl = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert reference.sentence_sr_loss(h_p, h_s).item() == pytest.approx(kl / 2, rel=1e-5)
    assert reference.sentence_sr_loss(h_p, h_s, torch.tensor([1, 0])).item() == pytest.approx(kl, rel=1e-5)


def test_all_rows_ignored_gives_exact_zero_and_zero_grads():
    logits = torch.randn(4, 5, requires_grad=True)
    emb = torch.randn(5, 3, requires_grad=True)
    out = reference.mlm_loss(logits, torch.full((4,), -100), sr_weight=1.0, sr_embedding=emb)
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert logits.grad.abs().sum() == 0 and emb.grad.abs().sum() == 0
    assert (out.predictions == -100).all()


def test_disallow_correct_never_predicts_gold():
    logits = torch.zeros(50, 4)
    logits[:, 1] = 10.0
    labels = torch.full((50,), 1)
    for mode in ("argmax", "sample"):
        pred = reference.predict(logits, labels, prediction=mode, seed=1, disallow_correct=True)
        assert (pred != 1).all()


def test_linear_head_equals_logits_path():
    h, w, b = torch.randn(6, 4), torch.randn(9, 4), torch.randn(9)
    y = torch.tensor([0, 3, -100, 8, 1, 2])
    a = reference.linear_mlm_loss(h, w, y, bias=b, sr_weight=0.3)
    c = reference.mlm_loss(h @ w.T + b, y, sr_weight=0.3, sr_embedding=w)
    torch.testing.assert_close(a.loss, c.loss)
    assert torch.equal(a.predictions, c.predictions)
