"""A patched model still evaluates: in eval mode (return_logits="eval", the default) a call with labels returns the
original head's [B, L, V] logits and the same tnops loss as training computes, "always" / "never" override it, and
the HF Trainer's train() then evaluate() with run_mlm.py's accuracy metric returns eval_loss and eval_accuracy
equal to the patched model's own, computed directly. (No [B, L, V] tensor in a training step:
test_integrations_transformers.py.)"""
import copy

import numpy as np
import pytest
import torch

from tnops import reference
from tnops.integrations.transformers import apply_true_negatives

transformers = pytest.importorskip("transformers")

from test_integrations_transformers import (  # noqa: E402  (after the importorskip, as that module needs it)
    MODELS,
    B,
    L,
    V,
    _assert_grads_equal,
    _batch,
    _dense_table,
    _model,
)


@pytest.mark.parametrize("name", MODELS)
def test_eval_mode_returns_the_logits_and_the_training_objective(name):
    model, table = _model(name), _dense_table()
    unpatched = copy.deepcopy(model).eval()
    input_ids, attention_mask, labels = _batch()
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    apply_true_negatives(model, table, sr_weight=0.5).eval()
    with torch.no_grad():
        out = model(**inputs)
        want_logits = unpatched(input_ids=input_ids, attention_mask=attention_mask).logits
    stats = out.true_negatives
    assert out.logits.shape == (B, L, V)
    torch.testing.assert_close(out.logits, want_logits, rtol=1e-5, atol=1e-6)
    want = reference.mlm_loss(want_logits.double(), labels, synonyms=table, predictions=stats.predictions,
                              sr_weight=0.5, sr_embedding=unpatched.get_input_embeddings().weight)
    torch.testing.assert_close(out.loss, want.loss.float(), rtol=1e-5, atol=0)  # the tnops loss, not plain CE
    masked = labels != -100
    assert 0 < int(stats.num_corrected) < int(masked.sum())
    assert torch.equal(stats.predictions[masked], out.logits.argmax(-1)[masked])

    apply_true_negatives(model, table, sr_weight=0.5, return_logits="never")  # eval without the [B, L, V] cost
    with torch.no_grad():
        never = model(**inputs)
    assert never.logits.shape == (B, L, 0)
    torch.testing.assert_close(never.loss, out.loss, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["BertForMaskedLM", "DistilBertForMaskedLM"])
def test_training_builds_logits_only_when_asked(name):
    table = _dense_table()
    default, always = (apply_true_negatives(_model(name), table, sr_weight=0.5, return_logits=mode)
                       for mode in ("eval", "always"))
    unpatched = _model(name)
    input_ids, attention_mask, labels = _batch()
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    lean, full = default(**inputs), always(**inputs, return_dict=False)
    assert lean.logits.shape == (B, L, 0)
    loss, logits = full
    torch.testing.assert_close(logits, unpatched(input_ids=input_ids, attention_mask=attention_mask).logits,
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, lean.loss, rtol=1e-6, atol=0)
    lean.loss.backward()
    loss.backward()
    _assert_grads_equal(always, default)
    with pytest.raises(ValueError, match="return_logits: expected one of 'eval', 'always', 'never'"):
        apply_true_negatives(default, table, return_logits=True)


def _rows(seed, count):
    rows = []
    for i in range(0, count, B):
        input_ids, attention_mask, labels = _batch(seed + i)
        rows += [dict(input_ids=input_ids[j], attention_mask=attention_mask[j], labels=labels[j]) for j in range(B)]
    return rows[:count]


# run_mlm.py's metric functions (transformers/examples/pytorch/language-modeling), numpy in place of `evaluate`
def preprocess_logits_for_metrics(logits, labels):
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def compute_metrics(eval_preds):
    preds, labels = eval_preds
    labels, preds = labels.reshape(-1), preds.reshape(-1)
    mask = labels != -100
    return {"accuracy": float(np.mean(preds[mask] == labels[mask]))}


def test_trainer_train_then_evaluate_with_run_mlm_metrics(tmp_path):
    pytest.importorskip("accelerate")  # transformers.Trainer needs it
    model = apply_true_negatives(_model("BertForMaskedLM"), _dense_table(), sr_weight=0.5)
    train, evaluation = _rows(10, 16), _rows(50, 8)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=8,
        eval_strategy="steps", eval_steps=2, logging_steps=1, learning_rate=1e-3, save_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                                   data_collator=transformers.default_data_collator, compute_metrics=compute_metrics,
                                   preprocess_logits_for_metrics=preprocess_logits_for_metrics)
    trainer.train()
    assert any("eval_accuracy" in entry for entry in trainer.state.log_history)  # eval_strategy ran it too
    metrics = trainer.evaluate()

    batch = transformers.default_data_collator(evaluation)  # the one evaluation batch
    masked = batch["labels"] != -100
    model.eval()
    with torch.no_grad():
        # the Trainer passes the batch's masked count as num_items_in_batch in evaluation as in training
        direct = model(**batch, num_items_in_batch=masked.sum())
        mean = model(**batch)
    assert direct.logits.shape == (8, L, V)
    assert metrics["eval_loss"] == pytest.approx(direct.loss.item(), rel=1e-6)
    accuracy = (direct.logits.argmax(-1)[masked] == batch["labels"][masked]).float().mean().item()
    assert metrics["eval_accuracy"] == pytest.approx(accuracy, rel=1e-6)
    stats = mean.true_negatives  # without num_items_in_batch: CE averaged over kept rows, SR over masked rows
    kept = masked.sum() - stats.num_corrected
    torch.testing.assert_close(direct.loss, (stats.mlm_loss * kept + 0.5 * stats.sr_loss * masked.sum())
                               / masked.sum(), rtol=1e-5, atol=0)
