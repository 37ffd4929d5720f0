"""Every argument check of the public API raises before any compute, naming the argument."""
import pytest
import torch

import tnops

H, W, B, Y = torch.randn(4, 8), torch.randn(10, 8), torch.randn(10), torch.tensor([1, 2, -100, 9])


def call(**overrides):
    args = dict(hidden=H, weight=W, labels=Y)
    args.update({k: v for k, v in overrides.items() if k in args})
    kwargs = {k: v for k, v in overrides.items() if k not in args}
    return tnops.linear_mlm_loss(args["hidden"], args["weight"], args["labels"], **kwargs)


LINEAR_CASES = [
    (dict(hidden=[[1.0]]), TypeError, "hidden: expected a torch.Tensor"),
    (dict(hidden=torch.ones(4, 8, dtype=torch.int64)), TypeError, "hidden: expected a float32"),
    (dict(weight=torch.randn(10, 8, 1)), ValueError, "weight: expected 2 dimensions"),
    (dict(weight=torch.randn(10, 7)), ValueError, r"weight: expected \[V, E=8\]"),
    (dict(labels=torch.ones(4)), TypeError, "labels: expected an integer tensor"),
    (dict(labels=torch.ones(5, dtype=torch.long)), ValueError, r"labels: expected shape \(4,\)"),
    (dict(labels=torch.tensor([1, 2, 3, 10])), ValueError, r"labels: expected ids in \[0, 10\)"),
    (dict(labels=torch.tensor([1, 2, 3, -5])), ValueError, "found -5"),
    (dict(bias=torch.randn(11)), ValueError, r"bias: expected shape \(10,\)"),
    (dict(bias=torch.randn(10, 1)), ValueError, "bias: expected 1 dimensions"),
    (dict(weight=W.double()), TypeError, "must share one dtype outside autocast"),
    (dict(prediction="greedy"), ValueError, "prediction: expected one of 'argmax', 'sample'"),
    (dict(temperature=0.0), ValueError, r"temperature: expected a number >= 1e-06 \(logits / temperature overflow"),
    (dict(temperature=1e-45, prediction="sample"), ValueError, "temperature: expected a number >= 1e-06"),
    (dict(temperature=float("nan")), ValueError, "temperature: expected a finite number"),
    (dict(temperature="1"), TypeError, "temperature: expected a real number"),
    (dict(sr_weight=-1.0), ValueError, "sr_weight: expected a number >= 0"),
    (dict(seed=1.5), TypeError, "seed: expected an int or None"),
    (dict(ignore_index="x"), TypeError, "ignore_index: expected an int"),
    (dict(reduction="avg"), ValueError, "reduction: expected one of 'mean', 'sum', 'none'"),
    (dict(disallow_correct=1), TypeError, "disallow_correct: expected a bool"),
    (dict(sr_embedding=torch.randn(9, 8)), ValueError, r"sr_embedding: expected \[V=10, E'\]"),
    (dict(synonyms="wordnet"), TypeError, "synonyms: expected a tnops.SynonymTable"),
]


@pytest.mark.parametrize("overrides,error,message", LINEAR_CASES)
def test_linear_mlm_loss_errors(overrides, error, message):
    with pytest.raises(error, match=message):
        call(**overrides)


def test_table_vocabulary_mismatch(make_table):
    with pytest.raises(ValueError, match="synonyms: the table was built for a vocabulary of 12 tokens"):
        call(synonyms=make_table([(1, 2)], 12))


def test_disallow_correct_needs_two_tokens():
    with pytest.raises(ValueError, match="disallow_correct: needs a vocabulary of at least 2"):
        tnops.mlm_loss(torch.randn(3, 1), torch.zeros(3, dtype=torch.long), disallow_correct=True)


def test_device_mismatch_is_reported():
    meta = torch.empty(4, 8, device="meta")
    with pytest.raises(ValueError, match="all tensors must be on one device"):
        call(hidden=meta)


@pytest.mark.parametrize("overrides,error,message", [
    (dict(logits=torch.randn(3)), ValueError, r"labels: expected shape \(\)"),
    (dict(labels=torch.zeros(3, 4, dtype=torch.long)), ValueError, r"labels: expected shape \(3,\)"),
    (dict(sr_weight=0.5), ValueError, "sr_embedding: sr_weight > 0 needs an embedding table"),
    (dict(sr_weight=0.5, sr_embedding=torch.randn(4, 2)), ValueError, r"sr_embedding: expected \[V=5"),
])
def test_mlm_loss_errors(overrides, error, message):
    args = dict(logits=torch.randn(3, 5), labels=torch.tensor([0, 1, 4]))
    args.update(overrides)
    with pytest.raises(error, match=message):
        tnops.mlm_loss(args.pop("logits"), args.pop("labels"), **args)


@pytest.mark.parametrize("args,error,message", [
    ((torch.randn(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long)), TypeError, "corrupted_ids: "
                                                                                             "expected an integer"),
    ((torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)), ValueError,
     r"corrupted_ids: expected the shape of disc_logits \(2, 3\)"),
    ((torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.ones(3)),
     ValueError, "attention_mask: expected the shape"),
    ((torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), None,
      torch.zeros(2, 3)), TypeError, "corrected: expected a bool tensor"),
    ((torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)),
     TypeError, "disc_logits: expected a float32"),
])
def test_rtd_loss_errors(args, error, message):
    with pytest.raises(error, match=message):
        tnops.rtd_loss(*args)


@pytest.mark.parametrize("args,error,message", [
    ((torch.randn(5), torch.tensor([1]), torch.tensor([2])), ValueError, "embedding: expected 2 dimensions"),
    ((torch.randn(5, 2), torch.tensor([1]), torch.tensor([2, 3])), ValueError, "pred_ids: expected the shape of "
                                                                               "gold_ids"),
    ((torch.randn(5, 2), torch.tensor([7]), torch.tensor([2])), ValueError, r"gold_ids: expected ids in \[0, 5\)"),
    ((torch.randn(5, 2), torch.tensor([1]), torch.tensor([5])), ValueError, r"pred_ids: expected ids in \[0, 5\)"),
    ((torch.randn(5, 2), torch.tensor([1.0]), torch.tensor([2])), TypeError, "gold_ids: expected an integer tensor"),
])
def test_sr_loss_errors(args, error, message):
    with pytest.raises(error, match=message):
        tnops.sr_loss(*args)


def test_sentence_sr_errors():
    with pytest.raises(ValueError, match="hidden_original: expected the shape of hidden_corrupted"):
        tnops.sentence_sr_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 3\)"):
        tnops.sentence_sr_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4))


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv("TNOPS_BACKEND", "cuda-magic")
    with pytest.raises(ValueError, match="TNOPS_BACKEND='cuda-magic': expected one of"):
        call()


def test_bad_chunk_rows_in_environment(monkeypatch):
    monkeypatch.setenv("TNOPS_CHUNK_ROWS", "0")
    with pytest.raises(ValueError, match="TNOPS_CHUNK_ROWS='0': expected a positive integer"):
        call()


def test_mixed_dtypes_accepted_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tnops.linear_mlm_loss(H, W.double(), Y)
    assert torch.isfinite(out.loss)


def test_row_ids_errors():
    with pytest.raises(ValueError, match=r"row_ids: expected the shape of labels \(4,\)"):
        call(row_ids=torch.arange(5))
    with pytest.raises(TypeError, match="row_ids: expected an integer tensor"):
        call(row_ids=torch.zeros(4))
    with pytest.raises(ValueError, match=r"row_ids: expected values in \[0, 2\^32\)"):
        call(row_ids=torch.tensor([0, 1, -2, 3]))
