"""apply_true_negatives on transformers' *ForMaskedLM models: loss and every gradient equal the reference on the
unpatched model's full logits, no [B, L, V] tensor in a patched training step, identical outputs without labels
and after removal, gradient accumulation through num_items_in_batch, and the errors."""
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import tnops
from tnops import reference
from tnops.integrations.transformers import (
    SUPPORTED_MODELS,
    apply_true_negatives,
    correction_counts,
    remove_true_negatives,
)

transformers = pytest.importorskip("transformers")

V, B, L, H = 211, 4, 16, 32
TINY = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=2 * L)  # every parameter smaller than B·L·V
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _config(name):
    if name == "DistilBertForMaskedLM":
        return transformers.DistilBertConfig(vocab_size=V, dim=H, n_layers=2, n_heads=2, hidden_dim=64, dropout=0.0,
                                             attention_dropout=0.0, max_position_embeddings=2 * L)
    if name == "ElectraForMaskedLM":
        return transformers.ElectraConfig(**TINY, **NO_DROPOUT, embedding_size=16)
    if name == "ModernBertForMaskedLM":
        return transformers.ModernBertConfig(**TINY, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                             sep_token_id=2)
    config_class = {"BertForMaskedLM": "BertConfig", "RobertaForMaskedLM": "RobertaConfig",
                    "XLMRobertaForMaskedLM": "XLMRobertaConfig"}[name]
    return getattr(transformers, config_class)(**TINY, **NO_DROPOUT)


MODELS = [name for name in SUPPORTED_MODELS if hasattr(transformers, name)]


def _model(name):
    torch.manual_seed(0)
    model = getattr(transformers, name)(_config(name))
    with torch.no_grad():  # zero biases and unit LayerNorms would hide a missing bias or a skipped LayerNorm
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.train()


def _batch(seed=1):
    """Random ids, the last two rows padded, ~25 % of the real positions masked."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, V, (B, L), generator=generator)
    attention_mask = torch.ones(B, L, dtype=torch.long)
    attention_mask[-2:, L - 5:] = 0
    input_ids[attention_mask == 0] = 0
    pick = (torch.rand(B, L, generator=generator) < 0.25) & attention_mask.bool()
    labels = torch.where(pick, input_ids, -100)
    return input_ids, attention_mask, labels


def _dense_table(seed=2):
    """Every token has a random third of the vocabulary as synonyms, so argmax and samples get corrected often."""
    generator = torch.Generator().manual_seed(seed)
    keys, values = torch.nonzero(torch.rand(V, V, generator=generator) < 1 / 3, as_tuple=True)
    return tnops.SynonymTable.from_pairs(keys.tolist(), values.tolist(), V)


def _grads(model):
    return {name: p.grad for name, p in model.named_parameters()}


def _assert_grads_equal(patched, unpatched):
    got, want = _grads(patched), _grads(unpatched)
    assert got.keys() == want.keys()
    for name in want:
        assert (got[name] is None) == (want[name] is None), name
        if want[name] is not None:
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("prediction,sr_weight", [("argmax", 0.0), ("sample", 0.7)])
def test_loss_and_every_gradient_equal_the_reference_on_full_logits(name, prediction, sr_weight):
    model = _model(name)
    unpatched = copy.deepcopy(model)
    input_ids, attention_mask, labels = _batch()
    table = _dense_table()
    apply_true_negatives(model, table, sr_weight=sr_weight, prediction=prediction)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()
    stats = out.true_negatives

    logits = unpatched(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, L, V]
    want = reference.mlm_loss(logits.double(), labels, synonyms=table, predictions=stats.predictions,
                              sr_weight=sr_weight, sr_embedding=unpatched.get_input_embeddings().weight)
    want.loss.backward()

    masked = labels != -100
    assert isinstance(out, transformers.modeling_outputs.MaskedLMOutput)
    assert out.logits.shape == (B, L, 0)
    torch.testing.assert_close(out.loss, want.loss.float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(stats.mlm_loss, want.mlm_loss.float(), rtol=1e-5, atol=0)
    assert torch.equal(stats.corrected, want.corrected)
    assert 0 < int(stats.num_corrected) < int(stats.num_masked) == int(masked.sum())
    assert torch.equal(stats.predictions == -100, ~masked)
    if prediction == "argmax":  # the head on masked rows alone predicts what the full head does
        assert torch.equal(stats.predictions[masked], logits.argmax(-1)[masked])
    assert model.tnops_last_output is stats
    _assert_grads_equal(model, unpatched)


def test_label_smoothing_and_z_loss_reach_the_patched_loss():
    """The issue-18 options through apply_true_negatives: loss and every gradient equal the reference's on the
    unpatched model's full logits (HC on, so they apply to kept rows only)."""
    model = _model("BertForMaskedLM")
    unpatched = copy.deepcopy(model)
    input_ids, attention_mask, labels = _batch()
    table = _dense_table()
    apply_true_negatives(model, table, label_smoothing=0.1, z_loss=1e-2)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()
    logits = unpatched(input_ids=input_ids, attention_mask=attention_mask).logits
    want = reference.mlm_loss(logits.double(), labels, synonyms=table, predictions=out.true_negatives.predictions,
                              label_smoothing=0.1, z_loss=1e-2)
    want.loss.backward()
    assert out.true_negatives.num_corrected > 0
    torch.testing.assert_close(out.loss, want.loss.float(), rtol=1e-5, atol=0)
    _assert_grads_equal(model, unpatched)
    with pytest.raises(ValueError, match="label_smoothing: expected 0 <= label_smoothing < 1"):
        apply_true_negatives(model, table, label_smoothing=1.5)


class _TensorSizes(TorchDispatchMode):
    """Records the shape of every tensor an op returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [(str(func), tuple(t.shape)) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out


def _largest_tensor(model, **inputs):
    with _TensorSizes() as sizes:
        model(**inputs).loss.backward()
    assert any("mm" in op for op, _ in sizes.shapes)  # the recorder saw the step's matmuls
    return max(sizes.shapes, key=lambda item: torch.Size(item[1]).numel())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("backend", [None, "torch"])
def test_no_full_logits_in_a_patched_training_step(name, backend):
    model = _model(name)
    input_ids, attention_mask, labels = _batch()
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    full = B * L * V
    op, shape = _largest_tensor(model, **inputs)  # the detector sees the unpatched model's logits
    assert torch.Size(shape).numel() >= full, (op, shape)
    apply_true_negatives(model, _dense_table(), sr_weight=0.5, backend=backend)
    op, shape = _largest_tensor(model, **inputs)
    assert torch.Size(shape).numel() < full, f"{op} made a tensor of shape {shape} (B·L·V = {full})"


@pytest.mark.parametrize("name", MODELS)
def test_without_labels_and_after_removal_the_model_is_unchanged(name):
    model = _model(name)
    unpatched = copy.deepcopy(model)
    input_ids, attention_mask, labels = _batch()
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    apply_true_negatives(model, _dense_table(), sr_weight=1.0)
    got, want = model(**inputs), unpatched(**inputs)
    assert torch.equal(got.logits, want.logits)
    assert all(torch.equal(a, b) for a, b in zip(got.hidden_states, want.hidden_states, strict=True))
    got_tuple = model(**inputs, return_dict=False)
    assert len(got_tuple) == 2 and torch.equal(got_tuple[0], want.logits)

    assert remove_true_negatives(model) is model
    assert "forward" not in vars(model) and not hasattr(model, "tnops_last_output")
    got, want = (m(**inputs, labels=labels) for m in (model, unpatched))
    assert torch.equal(got.loss, want.loss) and torch.equal(got.logits, want.logits)
    assert remove_true_negatives(model) is model  # a second removal does nothing


def test_patching_one_instance_leaves_the_class_and_other_instances_alone():
    cls = transformers.BertForMaskedLM
    forward = cls.forward
    patched, other = _model("BertForMaskedLM"), _model("BertForMaskedLM")
    input_ids, attention_mask, labels = _batch()
    apply_true_negatives(patched, _dense_table())
    assert cls.forward is forward and "forward" not in vars(other)
    out = other(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (B, L, V)
    assert not hasattr(out, "true_negatives")


def test_return_dict_false_keeps_the_tuple_layout():
    model = apply_true_negatives(_model("BertForMaskedLM"), _dense_table())
    input_ids, attention_mask, labels = _batch()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_hidden_states=True)
    loss, logits, hidden_states = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                                        output_hidden_states=True, return_dict=False)
    assert torch.equal(loss, out.loss) and logits.shape == (B, L, 0)
    assert len(hidden_states) == 3 and torch.equal(hidden_states[-1], out.hidden_states[-1])
    assert torch.equal(model.tnops_last_output.predictions, out.true_negatives.predictions)


def test_num_items_in_batch_sums_so_accumulation_equals_one_big_batch():
    table = _dense_table()
    input_ids, attention_mask, labels = _batch()
    total = (labels != -100).sum()
    big, unpatched = _model("BertForMaskedLM"), _model("BertForMaskedLM")
    accumulated = copy.deepcopy(big)
    for model in (big, accumulated):
        apply_true_negatives(model, table, sr_weight=0.5)
    out = big(input_ids=input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=total)
    out.loss.backward()
    logits = unpatched(input_ids=input_ids, attention_mask=attention_mask).logits
    want = reference.mlm_loss(logits.double(), labels, synonyms=table, predictions=out.true_negatives.predictions,
                              sr_weight=0.5, sr_embedding=unpatched.get_input_embeddings().weight, reduction="sum")
    (want.loss / total).backward()
    torch.testing.assert_close(out.loss, (want.loss / total).float(), rtol=1e-5, atol=0)
    _assert_grads_equal(big, unpatched)

    losses = []
    for part in (slice(0, 1), slice(1, B)):  # uneven micro-batches, each divided by the step's masked count
        micro = accumulated(input_ids=input_ids[part], attention_mask=attention_mask[part], labels=labels[part],
                            num_items_in_batch=total)
        micro.loss.backward()
        losses.append(micro.loss)
    torch.testing.assert_close(sum(losses), out.loss, rtol=1e-5, atol=0)
    _assert_grads_equal(accumulated, big)


def test_nothing_masked_gives_zero_loss_and_zero_gradients():
    model = apply_true_negatives(_model("BertForMaskedLM"), _dense_table())
    input_ids, attention_mask, _ = _batch()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.full((B, L), -100))
    out.loss.backward()
    assert out.loss.item() == 0.0 and int(out.true_negatives.num_masked) == 0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_correction_counts_sum_training_forwards_only():
    model = apply_true_negatives(_model("BertForMaskedLM"), _dense_table())
    input_ids, attention_mask, labels = _batch()
    assert correction_counts(model) == (0, 0)
    seen = [model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).true_negatives
            for _ in range(2)]
    model.eval()
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    corrected, masked = correction_counts(model, reset=True)
    assert masked == sum(int(s.num_masked) for s in seen) and corrected == sum(int(s.num_corrected) for s in seen)
    assert 0 < corrected < masked
    assert correction_counts(model) == (0, 0)


def test_a_subclass_that_keeps_the_forward_is_supported():
    class Keeps(transformers.BertForMaskedLM):
        pass

    class Overrides(transformers.BertForMaskedLM):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    config = _config("BertForMaskedLM")
    apply_true_negatives(Keeps(config))
    with pytest.raises(TypeError, match="BertForMaskedLM.*Overrides"):
        apply_true_negatives(Overrides(config))


def test_errors():
    config = _config("BertForMaskedLM")
    for model in (transformers.BertModel(config), transformers.BertForSequenceClassification(config),
                  torch.nn.Linear(2, 2)):
        with pytest.raises(TypeError, match="supports BertForMaskedLM, RobertaForMaskedLM, .*DistilBertForMaskedLM"):
            apply_true_negatives(model)
    model = _model("BertForMaskedLM")
    cases = [(dict(synonyms=tnops.SynonymTable.from_pairs([1], [2], V + 1)), ValueError, "synonyms"),
             (dict(synonyms="wordnet"), TypeError, "synonyms"),
             (dict(sr_weight=-1.0), ValueError, "sr_weight"),
             (dict(prediction="greedy"), ValueError, "prediction"),
             (dict(temperature=0.0), ValueError, "temperature"),
             (dict(seed=2**64), ValueError, "seed"),
             (dict(backend=3), TypeError, "backend")]
    for keywords, error, match in cases:
        with pytest.raises(error, match=match):
            apply_true_negatives(model, **keywords)
        assert "forward" not in vars(model)  # a refused call patches nothing
    apply_true_negatives(model)
    input_ids, attention_mask, labels = _batch()
    with pytest.raises(ValueError, match="labels: expected shape"):
        model(input_ids=input_ids, labels=labels[:, :-1])
    with pytest.raises(ValueError, match="not patched"):
        correction_counts(_model("BertForMaskedLM"))
