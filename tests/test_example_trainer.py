"""examples/hf_trainer_mlm.py: a few HF Trainer steps on the true-negative objective, the callback's logs, the
evaluation on held-out blocks (eval_loss, run_mlm.py's accuracy), and gradient accumulation through
num_items_in_batch equal to one big batch (gradients and logged loss). Skipped without transformers or accelerate
(transformers.Trainer needs accelerate)."""
import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hf_trainer_mlm.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("hf_trainer_mlm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_trains_a_few_steps_and_logs_the_correction_rate(example, tmp_path):
    trainer = example.main(["--max-steps", "3", "--batch-size", "4", "--seq-len", "64", "--max-documents", "2",
                            "--logging-steps", "1", "--eval-blocks", "3", "--output-dir", str(tmp_path)])
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert math.isfinite(entry["loss"]) and entry["masked_tokens"] > 0
        assert entry["correction_rate"] == entry["corrected_tokens"] / entry["masked_tokens"]
    (report,) = [entry["false_negatives"] for entry in trainer.state.log_history if "false_negatives" in entry]
    assert report["masked"] > 0 and 0 <= report["corrected"] <= report["mismatched"] <= report["masked"]
    assert report["prediction_level"] == report["corrected"] / max(report["mismatched"], 1)
    assert 0 <= report["iteration_level"] <= 1 and isinstance(report["examples"], list)
    (evaluation,) = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert math.isfinite(evaluation["eval_loss"]) and 0 <= evaluation["eval_accuracy"] <= 1
    assert len(trainer.eval_dataset) == 3 and len(trainer.train_dataset) > 0
    saved = transformers.BertForMaskedLM.from_pretrained(tmp_path / "final")  # loads as a plain model
    assert "forward" not in vars(saved)
    assert saved(input_ids=torch.tensor([[101, 2023, 103, 102]])).logits.shape == (1, 4, 30522)


class _GradientRecorder(transformers.TrainerCallback):
    """Copies every gradient just before the optimizer step (clipping is off, so they are the raw sums)."""

    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_accumulation_equals_one_big_batch(example, tmp_path):
    from tnops import SynonymTable
    from tnops.integrations.trainer_callback import TrueNegativeCallback
    from tnops.integrations.transformers import apply_true_negatives

    tokenizer = example.load_tokenizer()
    blocks = example.build_dataset(tokenizer, max_documents=2, seq_len=32)[:4]
    torch.manual_seed(0)  # mask once, so both runs see the same masked batch
    batch = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)(blocks)
    dataset = [{key: batch[key][i] for key in ("input_ids", "attention_mask", "labels")} for i in range(4)]
    model = example.build_model("random", len(tokenizer), 32, dropout=0.0)
    with torch.no_grad():  # the untrained model's argmax; half of the masked positions get it as a synonym
        predictions = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    masked = (batch["labels"] != -100) & (predictions != batch["labels"])
    gold, predicted = batch["labels"][masked][::2], predictions[masked][::2]
    table = SynonymTable.from_pairs(gold.tolist(), predicted.tolist(), len(tokenizer))
    apply_true_negatives(model, table, sr_weight=0.5)

    runs = {}
    for batch_size, accumulation in ((4, 1), (2, 2), (1, 4)):
        args = example.parse_args(["--output-dir", str(tmp_path / f"{batch_size}"), "--max-steps", "1",
                                   "--batch-size", str(batch_size), "--grad-accum", str(accumulation),
                                   "--logging-steps", "1"])
        recorder = _GradientRecorder()
        trainer = transformers.Trainer(
            model=copy.deepcopy(model), train_dataset=dataset, data_collator=transformers.default_data_collator,
            args=example.training_arguments(args, max_grad_norm=0.0, train_sampling_strategy="sequential"),
            callbacks=[TrueNegativeCallback(), recorder])
        trainer.train()
        runs[accumulation] = (recorder.grads, trainer.state.log_history[0])
    big_grads, big_log = runs[1]
    assert big_log["corrected_tokens"] > 0 and big_log["masked_tokens"] == int((batch["labels"] != -100).sum())
    for accumulation in (2, 4):
        grads, log = runs[accumulation]
        assert grads.keys() == big_grads.keys()
        for name, grad in big_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
        assert log["loss"] == pytest.approx(big_log["loss"], rel=1e-5)
        assert (log["corrected_tokens"], log["masked_tokens"]) == (big_log["corrected_tokens"],
                                                                   big_log["masked_tokens"])


def test_false_negative_report_counts_and_shows_corrections(example, make_table):
    """The HF route's Table-2 ratios and Figure-3 examples: a table listing the model's own wrong predictions makes
    every one of them a correction."""
    from tnops.integrations.transformers import apply_true_negatives, remove_true_negatives

    tokenizer = example.load_tokenizer()
    blocks = example.build_dataset(tokenizer, None, 2, 64)[:4]
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    model = example.build_model("random", len(tokenizer), 64)
    apply_true_negatives(model, None)
    model.eval()
    transformers.set_seed(3)
    batch = collator(blocks)
    with torch.no_grad():
        out = model(**batch).true_negatives
    labels = batch["labels"]
    wrong = (labels != -100) & (out.predictions != labels)
    pairs = list(zip(labels[wrong].tolist(), out.predictions[wrong].tolist()))
    remove_true_negatives(model)
    table = make_table(pairs, len(tokenizer))
    apply_true_negatives(model, table)
    transformers.set_seed(3)
    report = example.false_negative_report(model, tokenizer, table, blocks, collator, batch_size=4, examples=3)
    assert report["corrected"] == report["mismatched"] == len(pairs) > 0
    assert report["prediction_level"] == 1.0 and report["iteration_level"] > 0
    assert 1 <= len(report["examples"]) <= 3 and all("[" in e["context"] for e in report["examples"])
