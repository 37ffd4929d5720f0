"""Regression tests of issue 8: inputs that once gave a wrong answer with no error, on every CPU backend."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tnops

BACKENDS = ["reference", "torch", "triton", "native"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("TNOPS_BACKEND", request.param)
    return request.param


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def test_ignore_index_that_is_a_vocabulary_id_keeps_the_mean(backend):
    """A masked row whose *prediction* equals ignore_index (a pad id) still counts: the masked set is the labels'."""
    h, w = leaves(torch.tensor([[1.0], [-1.0]]), torch.tensor([[1.0], [-1.0]]))
    y = torch.tensor([1, 1])
    expected = F.cross_entropy(h @ w.T, y, ignore_index=0)  # 1.1269
    d_expected = torch.autograd.grad(expected, (h, w))
    out = tnops.linear_mlm_loss(h, w, y, ignore_index=0)
    torch.testing.assert_close(out.loss, expected)
    for got, want in zip(torch.autograd.grad(out.loss, (h, w)), d_expected):
        torch.testing.assert_close(got, want)
    assert out.predictions.tolist() == [0, 1]  # row 0 predicts the pad id and is still a masked row


def test_drop_in_cross_entropy_with_pad_ignore_index(backend):
    logits = leaves(torch.tensor([[2.0, 0.5, 0.1], [0.3, 0.2, 1.5], [3.0, 0.0, 0.0]]))[0]
    y = torch.tensor([1, 2, 0])
    loss = tnops.nn.TrueNegativeCrossEntropy(ignore_index=0)(logits, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, ignore_index=0))


def test_sr_loss_refuses_ignore_index_as_a_prediction_of_a_gold_row():
    emb = torch.randn(10, 4)
    with pytest.raises(ValueError, match=r"pred_ids: expected ids in \[0, 10\), found -100"):
        tnops.sr_loss(emb, torch.tensor([1, 2]), torch.tensor([3, -100]))
    # an ignored gold row may hold anything as prediction
    tnops.sr_loss(emb, torch.tensor([1, -100]), torch.tensor([3, -100]))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_row_ids_int32_and_int64_sample_alike(backend, dtype):
    h, w = torch.randn(6, 16), torch.randn(33, 16)
    y = torch.tensor([1, -100, 5, 7, -100, 2])
    rows = torch.tensor([9, 3, 2**31 - 1, 0, 17, 40])
    out = tnops.linear_mlm_loss(h, w, y, prediction="sample", seed=3, row_ids=rows.to(dtype))
    ref = tnops.reference.linear_mlm_loss(h, w, y, prediction="sample", seed=3, row_ids=rows)
    assert torch.equal(out.predictions, ref.predictions)


def test_row_ids_of_other_integer_types_are_refused():
    with pytest.raises(TypeError, match="row_ids: expected an int32 or int64 tensor, got torch.int16"):
        tnops.linear_mlm_loss(torch.randn(2, 4), torch.randn(5, 4), torch.tensor([1, 2]),
                              row_ids=torch.tensor([0, 1], dtype=torch.int16))


def test_nan_in_an_ignored_row_and_minus_inf_logit_do_not_poison(backend):
    """As F.cross_entropy(ignore_index=...): an ignored row may hold NaN, a bias may forbid [PAD] with -inf."""
    h, w, b = torch.randn(5, 16), torch.randn(11, 16) * 0.3, torch.randn(11) * 0.1
    b[0] = float("-inf")
    y = torch.tensor([3, -100, 4, -100, 10])
    h[1] = float("nan")
    h[3, 2] = float("inf")
    clean = h.clone()
    clean[1] = 0.0
    clean[3] = 0.0
    kw = dict(synonyms=None, sr_weight=0.5, reduction="mean")
    h1, w1, b1 = leaves(h, w, b)
    out = tnops.linear_mlm_loss(h1, w1, y, bias=b1, **kw)
    grads = torch.autograd.grad(out.loss, (h1, w1, b1))
    h2, w2, b2 = leaves(clean, w, b)
    ref = tnops.reference.linear_mlm_loss(h2.double(), w2.double(), y, bias=b2.double(), **kw)
    ref_grads = torch.autograd.grad(ref.loss, (h2, w2, b2))
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss.double(), ref.loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        got = torch.where(torch.isinf(want), want, got)  # d bias[0] is 0 on both sides; guard nothing else
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-6)
    assert (out.predictions[[0, 2, 4]] != 0).all()  # -inf forbids id 0


def test_rtd_and_sentence_sr_ignore_nan_at_padding(backend):
    logits = leaves(torch.tensor([[0.3, -1.2, float("nan")]]))[0]
    corrupted, original = torch.tensor([[5, 6, 7]]), torch.tensor([[5, 9, 7]])
    mask = torch.tensor([[1, 1, 0]])
    loss = tnops.rtd_loss(logits, corrupted, original, mask)
    (grad,) = torch.autograd.grad(loss, logits)
    expected = F.binary_cross_entropy_with_logits(torch.tensor([0.3, -1.2]), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(loss, expected)
    assert torch.isfinite(grad).all() and grad[0, 2] == 0
    hp, hs = leaves(torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    with torch.no_grad():
        hp[0, 2] = float("nan")
    kl = tnops.sentence_sr_loss(hp, hs, mask)
    kl_ref = tnops.sentence_sr_loss(hp[:, :2], hs[:, :2])
    torch.testing.assert_close(kl, kl_ref)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(kl, (hp, hs)))


def test_argmax_in_float64_for_float64_inputs(backend):
    if backend == "triton":
        pytest.skip("the Triton path refuses float64 (tests/test_triton_inputs.py)")
    logits = torch.tensor([[1.0, 1.0 + 1e-12, 0.5]], dtype=torch.float64)  # a tie in float32, not in float64
    out = tnops.mlm_loss(logits, torch.tensor([2]))
    assert out.predictions.tolist() == [1]
    h = torch.tensor([[1.0]], dtype=torch.float64)
    w = torch.tensor([[1.0], [1.0 + 1e-12], [0.5]], dtype=torch.float64)
    assert tnops.linear_mlm_loss(h, w, torch.tensor([2])).predictions.tolist() == [1]


def test_seeds_are_taken_modulo_2_64(backend):
    h, w, y = torch.randn(4, 16), torch.randn(29, 16), torch.tensor([1, 2, 3, 4])

    def sample(seed):
        return tnops.linear_mlm_loss(h, w, y, prediction="sample", seed=seed).predictions

    ref = tnops.reference.linear_mlm_loss(h, w, y, prediction="sample", seed=2**64 - 1).predictions
    for seed in (-1, 2**64 - 1, np.int64(-1), np.uint64(2**64 - 1)):
        assert torch.equal(sample(seed), ref), seed
    assert torch.equal(sample(np.int64(7)), sample(7))
    for bad in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match=r"seed: expected an integer in \[-2\^63, 2\^64\)"):
            sample(bad)


@pytest.mark.parametrize("call,message", [
    (lambda: tnops.linear_mlm_loss(torch.randn(3, 4), torch.randn(0, 4), torch.tensor([-100] * 3)),
     r"vocabulary: expected V >= 1"),
    (lambda: tnops.linear_mlm_loss(torch.randn(3, 0), torch.randn(5, 0), torch.tensor([1, 2, 3])),
     r"hidden: expected \[\*, E\] with E >= 1"),
    (lambda: tnops.mlm_loss(torch.randn(3, 0), torch.tensor([-100] * 3)), r"vocabulary: expected V >= 1"),
    (lambda: tnops.sr_loss(torch.randn(5, 0), torch.tensor([1]), torch.tensor([2])),
     r"embedding: expected \[V, E'\] with E' >= 1"),
])
def test_empty_vocabulary_or_width_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(prediction="bogus"), ValueError, "prediction: expected one of"),
    (dict(temperature=1e-45), ValueError, "temperature: expected a number >= 1e-06"),
    (dict(reduction="avg"), ValueError, "reduction: expected one of"),
    (dict(sr_weight=float("nan")), ValueError, "sr_weight: expected a finite number"),
])
@pytest.mark.parametrize("module", [tnops.nn.TrueNegativeCrossEntropy, tnops.nn.LinearMLMLoss])
def test_modules_check_options_when_built(module, kwargs, error, message):
    with pytest.raises(error, match=message):
        module(**kwargs)
