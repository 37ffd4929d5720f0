"""Fine-tune an exported ELECTRA discriminator on a GLUE task: ``electra-finetune``.

Also ``python -m electra.finetune``::

    electra-finetune --model OUTPUT_DIR/final --task rte --data-dir glue/RTE --output-dir runs/rte

``--model`` is electra-pretrain's ``OUTPUT_DIR/final`` (its ``discriminator/`` is used) or a discriminator directory;
it is loaded as transformers' ``AutoModelForSequenceClassification`` (a fresh classifier on the pre-trained encoder;
a checkpoint that would leave any encoder weight random is refused) with the tokenizer saved beside the weights.
Training is the Hugging Face ``Trainer``: AdamW (ε 1e-6, no weight decay, as ELECTRA's fine-tuning), a linear
schedule with 10 % warm-up, no checkpoints, no reporting integrations; then one evaluation on the dev split.
ELECTRA's layer-wise learning-rate decay is not applied.

Metrics are the papers' (Clark et al. 2020 follow BERT): Matthews correlation for CoLA, Spearman (and Pearson) for
STS-B, accuracy and F1 for MRPC and QQP, accuracy elsewhere. The *primary* metric of a task, the one a GLUE
table shows, is ELECTRA's convention: Spearman for STS-B, Matthews for CoLA, accuracy for every other task (MRPC
and QQP included; their F1 is reported beside it). ``OUT/results.json`` holds the task, its metrics, ``primary``,
``eval_loss``, sample counts, steps and seconds; a metric that is undefined (a correlation of constant
predictions) is null, with its reason under ``reasons``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from electra import metrics
from electra.arguments import integer, number
from electra.glue import TASKS, GlueExamples, GlueTask, get_task, load_glue
from electra.init_from import quiet_transformers
from tnops.cli import ToolArgumentParser, run_tool

__all__ = ["TASKS", "finetune", "glue_metrics", "main", "primary_metric", "resolve_discriminator", "task_metrics"]

_METRICS = {"cola": ("matthews",), "stsb": ("spearman", "pearson"), "mrpc": ("accuracy", "f1"),
            "qqp": ("accuracy", "f1")}  # every other task: accuracy
_FUNCTIONS = {"matthews": metrics.matthews, "spearman": metrics.spearman, "pearson": metrics.pearson,
              "accuracy": metrics.accuracy, "f1": metrics.f1_binary}


def task_metrics(task) -> tuple:
    """The names of the metrics reported for ``task`` (the primary one first), e.g. ``("accuracy", "f1")``."""
    return _METRICS.get(get_task(task).name, ("accuracy",))


def primary_metric(task) -> str:
    """The metric a GLUE table shows for ``task`` (ELECTRA's convention): ``matthews`` for CoLA, ``spearman`` for
    STS-B, ``accuracy`` for the others (MRPC and QQP included)."""
    return task_metrics(task)[0]


def glue_metrics(task, predictions, labels) -> tuple[dict, dict]:
    """The metrics of ``task`` for ``predictions`` against ``labels``.

    Args:
        predictions: ``[N, C]`` logits or ``[N]`` class ids (classification), ``[N, 1]`` or ``[N]`` scores (STS-B);
            numpy arrays or anything ``numpy.asarray`` takes.
        labels: ``[N]`` class ids (scores for STS-B).
    Returns:
        ``(values, reasons)``: ``{name: float or None}`` for each of :func:`task_metrics`, and
        ``{name: why}`` for each None (a correlation of a constant input is undefined).
    """
    import numpy as np

    spec = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels).reshape(-1)
    if spec.is_regression:
        predictions = predictions.reshape(-1)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    values, reasons = {}, {}
    for name in task_metrics(spec.name):
        try:
            values[name] = _FUNCTIONS[name](predictions, labels)
        except ValueError as error:  # undefined (constant input): recorded, never a made-up number
            values[name], reasons[name] = None, str(error)
    return values, reasons


def resolve_discriminator(model) -> Path:
    """``--model``: electra-pretrain's ``final/`` (its ``discriminator/``) or a discriminator directory itself."""
    directory = Path(model).expanduser()
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise FileNotFoundError(f"--model: {what}: {str(model)!r}; expected electra-pretrain's OUTPUT_DIR/final or "
                                "its final/discriminator")
    if (directory / "discriminator").is_dir():
        directory = directory / "discriminator"
    config = directory / "config.json"
    if not config.is_file():
        held = " (only generator/: fine-tuning takes the discriminator)" if (directory / "generator").is_dir() else ""
        raise ValueError(f"--model: {directory} holds no discriminator{held}: expected {directory / 'discriminator'} "
                         "or a discriminator directory (config.json, weights and tokenizer)")
    try:
        architectures = json.loads(config.read_text("utf-8")).get("architectures") or []
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"--model: {config} is not a readable config ({type(error).__name__})") from None
    if "ElectraForMaskedLM" in architectures:
        raise ValueError(f"--model: {directory} is a generator (ElectraForMaskedLM); fine-tuning takes the "
                         "discriminator: pass electra-pretrain's final/ or final/discriminator")
    return directory


def _load_classifier(directory: Path, spec: GlueTask):
    """``AutoModelForSequenceClassification`` of ``directory`` with ``spec.num_labels`` outputs; ValueError when a
    weight other than the new classifier's would be random (not a pre-trained encoder of this kind)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    labels = {} if spec.is_regression else {"id2label": dict(enumerate(spec.labels)),
                                             "label2id": {name: i for i, name in enumerate(spec.labels)}}
    try:
        with quiet_transformers():  # the fresh classifier's notice: checked here instead
            model, info = AutoModelForSequenceClassification.from_pretrained(
                directory, num_labels=spec.num_labels, local_files_only=True, dtype=torch.float32,
                output_loading_info=True, **labels)
    except Exception as error:  # transformers raises OSError/ValueError/KeyError/... depending on the file
        first = (str(error).splitlines() or [""])[0][:300]
        raise ValueError(f"--model: cannot load {directory} as a sequence classifier "
                         f"({type(error).__name__}: {first})") from None
    missing = [k for k in info.get("missing_keys") or [] if not k.startswith("classifier.")]
    missing += [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        raise ValueError(f"--model: {directory}'s weights do not fit {type(model).__name__}: {len(missing)} would be "
                         f"random or are of another shape ({', '.join(sorted(missing)[:3])}, ...)")
    return model


class _Encoded:
    """Tokenized examples for the Trainer: item i is ``{input_ids, attention_mask, token_type_ids, labels}``."""

    def __init__(self, features: dict, labels: list) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{key: values[i] for key, values in self.features.items()}, "labels": self.labels[i]}


def _encode(tokenizer, examples: GlueExamples, max_seq_length: int, *, what: str = "tokenizing",
            progress: bool = False, chunk: int = 20_000) -> _Encoded:
    """Batched tokenizer calls (``chunk`` examples each, a tqdm bar over them when ``progress``): pairs as
    ``[CLS] a [SEP] b [SEP]``, truncated to ``max_seq_length`` tokens; no padding (the Trainer's collator pads)."""
    from tqdm.auto import tqdm

    features: dict = {}
    for start in tqdm(range(0, len(examples), chunk), desc=what, unit="chunk", disable=not progress,
                      leave=False):
        part = examples.texts_a[start:start + chunk]
        pair = () if examples.texts_b is None else (examples.texts_b[start:start + chunk],)
        for key, values in tokenizer(part, *pair, truncation=True, max_length=max_seq_length).items():
            features.setdefault(key, []).extend(values)
    return _Encoded(features, examples.labels)


def _warmup(arguments_class, ratio: float) -> dict:
    """The warm-up as a share of all steps: ``warmup_ratio`` before transformers 5, a float ``warmup_steps`` since."""
    import dataclasses

    names = {field.name for field in dataclasses.fields(arguments_class)}
    return {"warmup_ratio": ratio} if "warmup_ratio" in names else {"warmup_steps": ratio}


def _check(name: str, value, low, *, kind=int, optional=False, open_low=False):
    if value is None and optional:
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (kind is int and not isinstance(value, int)) or not math.isfinite(value) or (
            value <= low if open_low else value < low):
        wanted = f"{'an integer' if kind is int else 'a finite number'} {'>' if open_low else '>='} {low}"
        raise ValueError(f"{name}: expected {wanted}{' or None' if optional else ''}, got {value!r}")


def finetune(model_dir, task, output_dir, *, data_dir=None, max_steps=None, epochs=3.0, batch_size=32,
             learning_rate=1e-4, max_seq_length=128, seed=0, max_train_samples=None, max_eval_samples=None,
             progress=True) -> dict:
    """Fine-tune the discriminator in ``model_dir`` on GLUE ``task`` and evaluate it on the dev split.

    Args:
        model_dir: electra-pretrain's ``OUTPUT_DIR/final`` or its ``final/discriminator``.
        task: one of :data:`TASKS`.
        output_dir: where ``results.json`` is written (created when missing).
        data_dir: a folder of GLUE's TSV files for ``task``; None: the Hugging Face hub (needs the network).
        max_steps: optimiser steps (overrides ``epochs`` when given).
        max_train_samples, max_eval_samples: use only the first N examples of train / dev.
        progress: the Trainer's progress bars and loss lines.
    Returns:
        The dict written to ``results.json``: ``task``, each metric of :func:`task_metrics` (float, or None with
        ``reasons[name]``), ``primary`` (its name), ``eval_loss``, ``eval_samples``, ``train_samples``, ``steps``,
        ``epochs``, ``seconds`` (training and evaluation), ``model``, ``seed``, ``learning_rate``, ``batch_size``,
        ``max_seq_length``.
    """
    spec = get_task(task)
    _check("max_steps", max_steps, 1, optional=True)
    _check("epochs", epochs, 0, kind=float, open_low=True)
    _check("batch_size", batch_size, 1)
    _check("learning_rate", learning_rate, 0, kind=float, open_low=True)
    _check("max_seq_length", max_seq_length, 8)
    _check("seed", seed, 0)
    _check("max_train_samples", max_train_samples, 1, optional=True)
    _check("max_eval_samples", max_eval_samples, 1, optional=True)
    directory = resolve_discriminator(model_dir)
    from tnops.io import atomic_write_text, prepare_output_directory

    output = prepare_output_directory(output_dir, argument="--output-dir")
    train_examples, dev_examples = load_glue(spec.name, data_dir)  # before the model: bad data fails at once
    train_examples, dev_examples = train_examples.head(max_train_samples), dev_examples.head(max_eval_samples)

    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    from electra.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(directory))
    set_seed(seed)  # the fresh classifier's initialisation follows the seed too
    model = _load_classifier(directory, spec)
    train_set = _encode(tokenizer, train_examples, max_seq_length, what="tokenizing train", progress=progress)
    dev_set = _encode(tokenizer, dev_examples, max_seq_length, what="tokenizing dev", progress=progress)
    reasons: dict = {}

    def compute_metrics(prediction) -> dict:
        values, why = glue_metrics(spec.name, prediction.predictions, prediction.label_ids)
        reasons.update(why)
        return {name: value for name, value in values.items() if value is not None}

    arguments = TrainingArguments(
        output_dir=str(output), report_to=[], save_strategy="no", eval_strategy="no", seed=seed,
        max_steps=max_steps if max_steps is not None else -1, num_train_epochs=float(epochs),
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size, learning_rate=learning_rate,
        lr_scheduler_type="linear", **_warmup(TrainingArguments, 0.1), weight_decay=0.0, adam_epsilon=1e-6,
        logging_strategy="steps" if progress else "no", logging_steps=10, disable_tqdm=not progress,
        dataloader_pin_memory=torch.cuda.is_available())
    started = time.perf_counter()
    with quiet_transformers():  # the fresh classifier's notice: checked here instead
        trainer = Trainer(model=model, args=arguments, train_dataset=train_set, eval_dataset=dev_set,
                          processing_class=tokenizer, compute_metrics=compute_metrics)
        if not progress:  # without bars the Trainer prints every log dict instead
            trainer.remove_callback(PrinterCallback)
        trainer.train()
        evaluation = trainer.evaluate()
    seconds = time.perf_counter() - started
    results = {"task": spec.name}
    for name in task_metrics(spec.name):
        results[name] = evaluation.get(f"eval_{name}")
    results.update(primary=primary_metric(spec.name), eval_loss=evaluation.get("eval_loss"),
                   eval_samples=len(dev_set), train_samples=len(train_set), steps=trainer.state.global_step,
                   epochs=trainer.state.epoch, seconds=round(seconds, 3), model=str(directory), seed=seed,
                   learning_rate=learning_rate, batch_size=batch_size, max_seq_length=max_seq_length)
    if reasons:
        results["reasons"] = reasons
    atomic_write_text(json.dumps(results, indent=2) + "\n", output / "results.json", what="results")
    return results


def _format(results: dict) -> str:
    shown = [f"{name} {results[name]:.4f}" if results[name] is not None else f"{name} undefined"
             for name in task_metrics(results["task"])]
    return (f"{results['task']} dev: {', '.join(shown)} ({results['eval_samples']} examples; trained "
            f"{results['steps']} steps on {results['train_samples']} examples in {results['seconds']:.1f} s)")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check the command line (argparse error naming the flag for a bad value or task)."""
    p = ToolArgumentParser(prog="electra-finetune", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="electra-pretrain's OUTPUT_DIR/final or its final/discriminator")
    p.add_argument("--task", required=True, type=str.lower, choices=TASKS, help="the GLUE task")
    p.add_argument("--output-dir", required=True, help="folder for results.json (created when missing)")
    p.add_argument("--data-dir", default=None, help="GLUE's TSV files of the task (train.tsv, dev.tsv; MNLI "
                   "dev_matched.tsv); default: the Hugging Face hub (needs the datasets library and the network)")
    p.add_argument("--max-steps", type=integer(1), default=None, help="optimiser steps (overrides --epochs)")
    p.add_argument("--epochs", type=number(0.0, low_open=True), default=3.0, help="training epochs (default 3)")
    p.add_argument("--batch-size", type=integer(1), default=32)
    p.add_argument("--learning-rate", type=number(0.0, low_open=True), default=1e-4,
                   help="peak learning rate (default 1e-4, ELECTRA-Base's; the paper's Small used 3e-4)")
    p.add_argument("--max-seq-length", type=integer(8), default=128)
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--max-train-samples", type=integer(1), default=None, help="use the first N training examples")
    p.add_argument("--max-eval-samples", type=integer(1), default=None, help="use the first N dev examples")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or loss lines")
    p.add_argument("--json", action="store_true", help="print results.json instead of the summary line")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run the command: 0 on success, 2 for bad arguments, models, data or output folders (one line on stderr)."""
    args = parse_args(argv)
    return run_tool("electra-finetune", lambda: _run(args), errors=(ImportError,))


def _run(args) -> int:
    results = finetune(args.model, args.task, args.output_dir, data_dir=args.data_dir, max_steps=args.max_steps,
                       epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                       max_seq_length=args.max_seq_length, seed=args.seed, max_train_samples=args.max_train_samples,
                       max_eval_samples=args.max_eval_samples, progress=not args.no_progress)
    print(json.dumps(results, indent=2) if args.json else _format(results))
    print(f"results: {Path(args.output_dir) / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
