"""Baseline, hard correction and soft regularization pre-trained side by side: ``electra-compare``.

Also ``python -m electra.compare``::

    electra-compare --variants baseline,hc,sr,hc+sr --preset tiny --max-steps 300 --output-dir runs/compare \\
        [--seeds 0,1,2] [--finetune TASK --data-dir DIR] [any other electra-pretrain flag]

Every variant is an ``electra-pretrain`` run (in this process, one after another) with the flags of
:data:`VARIANTS`: baseline ``--no-hc --sr-weight 0``; hc ``--sr-weight 0``; sr ``--no-hc`` (word-level SR, weight
1); hc+sr none; sentence-sr ``--no-hc --sr-weight 0 --sentence-sr 1`` (paper Table 6); embedding-hc ``--sr-weight 0``
with the embedding-neighbour table (paper §5): the ``--embedding-k`` nearest vocabulary words by cosine, as ``tnops
synonyms build --source embeddings:PATH`` builds it, from ``--embedding-vectors PATH`` (GloVe/word2vec text), else
from the pretrained word embeddings of ``--init-from``/``--generator-from``; without either it is refused (no word
vectors are installed offline here, and a fresh model's embeddings are random).  hc, hc+sr and the evaluation share
one table: ``--synonyms FILE``, else ``OUT/synonyms/synonyms.pt`` built once (WordNet, or ``mythes:PATH``).

Seed S of every variant runs with ``--seed S``: initialisation, data order, masks and samples derive from the seed
alone (:mod:`electra.seeds`), so the variants of a seed start from the same weights on the same batches and masks.
(sentence-sr's extra discriminator forward draws dropout from the same torch stream: its dropout differs from step 2.)

Runs go to ``OUT/<variant>/seed<S>/`` with ``run.json`` (their settings).  A run whose ``summary.json`` reached the
requested steps with the same settings is not trained again; an unfinished one resumes from its checkpoint; one made
with other settings is trained afresh.  Each run is evaluated by :func:`electra.eval.evaluate_model` (``eval.json``,
on its own held-out split) and, with ``--finetune TASK``, fine-tuned by :func:`electra.finetune.finetune`
(``finetune/TASK/results.json``); then ``OUT/compare.json``, ``compare.md`` and ``compare.png``
(:mod:`electra.compare_report`).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from electra import pretrain
from electra.compare_args import VARIANTS, parse_args, run_settings, variant_flags
from electra.compare_report import COLUMNS, write_json, write_report
from electra.config import PRESETS
from electra.trainer import NonFiniteLossError
from tnops.cli import error_line, run_tool
from tnops.io import atomic_write_text, prepare_output_directory

__all__ = ["VARIANTS", "compare", "main", "parse_args", "run_status", "variant_flags"]

def _read_json(path: Path):
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def run_status(run_dir: Path, settings: dict, max_steps: int) -> tuple[str, str]:
    """``(status, reason)`` of a run directory: ``finished`` (same settings, ``summary.json`` at ``max_steps``,
    exported), ``resume`` (same settings, a checkpoint) or ``fresh`` (nothing usable)."""
    record = _read_json(run_dir / "run.json")
    if record is None:
        return "fresh", "new run" if not run_dir.exists() or not any(run_dir.iterdir()) else "no run.json"
    if record.get("settings") != settings:
        changed = sorted(k for k in set(settings) | set(record.get("settings") or {})
                         if settings.get(k) != (record.get("settings") or {}).get(k))
        return "fresh", f"settings changed ({', '.join(changed)})"
    summary = _read_json(run_dir / "summary.json") or {}
    if summary.get("steps") == max_steps and (run_dir / "final" / "discriminator").is_dir():
        return "finished", f"already trained ({max_steps} steps)"
    if (run_dir / "checkpoint.pt").is_file():
        return "resume", "resuming its checkpoint"
    return "fresh", "no checkpoint"


def _clear(run_dir: Path) -> None:
    """Remove what an earlier run (or comparison) wrote in ``run_dir``, before it is trained afresh."""
    for name in ("checkpoint.pt", "summary.json", "history.json", "loss_curve.png", "eval.json", "run.json",
                 "synonyms.pt"):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("final", "finetune"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


class RunFailed(RuntimeError):
    """A run of the comparison failed: its message names the variant and seed; ``status`` is the exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _say(text: str, progress) -> None:
    (progress.write if progress is not None else print)(text)


def _tokenizer_and_vectors(args):
    """The runs' tokenizer, and embedding-hc's word vectors (a path, a [V, D] tensor or None) with their name."""
    from electra.init_from import load_pretrained
    from electra.tokenizer import load_tokenizer

    ns = args.pretrain
    if not (ns.init_from or ns.generator_from):
        return load_tokenizer(ns.tokenizer), args.embedding_vectors, args.embedding_vectors
    loaded = load_pretrained(ns.init_from, ns.generator_from, ns.tokenizer, ns.dropout)
    half = loaded.discriminator if loaded.discriminator is not None else loaded.generator
    if args.embedding_vectors:
        return loaded.tokenizer, args.embedding_vectors, args.embedding_vectors
    source = (f"--init-from {ns.init_from}" if loaded.discriminator is not None
              else f"--generator-from {ns.generator_from}")
    return loaded.tokenizer, half.electra.embeddings.word_embeddings.weight.detach(), source


def _tables(args, out: Path) -> tuple[Path, Path | None]:
    """``(shared table file, embedding-hc table file or None)``, built once per output folder."""
    import tnops
    from electra.synonym_source import run_synonyms

    ns = args.pretrain
    tokenizer, vectors, source = _tokenizer_and_vectors(args)
    user_file = ns.synonyms and ns.synonyms != "wordnet" and not ns.synonyms.startswith("mythes:")
    if user_file:
        tnops.SynonymTable.load(ns.synonyms, vocab=tokenizer)  # checked against the vocabulary before any run
        shared = Path(ns.synonyms)
    else:
        folder = prepare_output_directory(out / "synonyms", argument="--output-dir")
        run_synonyms(SimpleNamespace(no_hc=False, synonyms=ns.synonyms, no_progress=ns.no_progress), tokenizer,
                     folder, 0)
        shared = folder / "synonyms.pt"
    if "embedding-hc" not in args.variants:
        return shared, None
    folder = prepare_output_directory(out / "embedding-hc", argument="--output-dir")
    target, record_path = folder / "synonyms.pt", folder / "synonyms.json"
    record = {"vectors": str(source), "k": args.embedding_k, "threshold": args.embedding_threshold}
    if _read_json(record_path) != record or not target.is_file():
        table = tnops.SynonymTable.from_embeddings(vectors, tokenizer, k=args.embedding_k,
                                                   threshold=args.embedding_threshold, progress=not ns.no_progress)
        table.save(target)
        atomic_write_text(json.dumps(record), record_path, what="table record")
    return shared, target


def _max_steps(ns) -> int:
    return ns.max_steps if ns.max_steps is not None else PRESETS[ns.preset]["max_steps"]


def _train(args, variant: str, seed: int, tables, progress) -> Path:
    """Train (or resume, or skip) one run; its directory."""
    shared, embedding = tables
    run_dir = Path(args.output_dir) / variant / f"seed{seed}"
    argv = [*args.pretrain_argv, *variant_flags(variant, embedding, shared), "--seed", str(seed),
            "--output-dir", str(run_dir)]
    ns = pretrain.parse_args(argv)
    settings, steps = run_settings(ns), _max_steps(ns)
    status, reason = run_status(run_dir, settings, steps)
    if status == "finished":
        _say(f"{variant} seed {seed}: {reason}, not retrained", progress)
        return run_dir
    if status == "fresh":
        _clear(run_dir)
    prepare_output_directory(run_dir, argument="--output-dir")
    atomic_write_text(json.dumps({"variant": variant, "seed": seed, "pretrain_argv": argv, "settings": settings},
                                 indent=1), run_dir / "run.json", what="run record")
    if status == "resume":
        ns = pretrain.parse_args([*argv, "--resume"])
    started = time.perf_counter()
    _say(f"{variant} seed {seed}: training {steps} steps ({reason})", progress)
    pretrain.train(ns)
    _say(f"{variant} seed {seed}: trained in {time.perf_counter() - started:.1f} s", progress)
    return run_dir


def _evaluate(args, run_dir: Path, seed: int, table: Path) -> dict:
    """``eval.json`` of a run: :func:`electra.eval.evaluate_model` on its export, unless already there for the
    same evaluation settings (``run.json``'s ``eval_settings``)."""
    from electra.eval import evaluate_model

    ns = args.pretrain
    batches = args.eval_max_batches or ns.eval_batches or 8
    options = {"corpus": ns.corpus, "max_seq_length": ns.max_seq_length or PRESETS[ns.preset]["max_seq_length"],
               "max_batches": batches, "batch_size": ns.batch_size or PRESETS[ns.preset]["batch_size"],
               "synonyms": str(table), "seed": seed}
    record = _read_json(run_dir / "run.json") or {}
    result = _read_json(run_dir / "eval.json")
    if result is not None and record.get("eval_settings") == options:
        return result
    result = evaluate_model(run_dir / "final", **options, progress=not ns.no_progress)
    write_json(result, run_dir / "eval.json")
    atomic_write_text(json.dumps({**record, "eval_settings": options}, indent=1), run_dir / "run.json",
                      what="run record")
    return result


def _finetune(args, run_dir: Path, seed: int) -> dict:
    """``finetune/TASK/results.json`` of a run (reused when made with the same settings)."""
    from electra.finetune import finetune

    ns, task = args.pretrain, args.finetune
    options = {"data_dir": args.data_dir, "max_steps": args.finetune_steps, "epochs": args.finetune_epochs,
               "batch_size": args.finetune_batch_size, "learning_rate": args.finetune_learning_rate,
               "max_seq_length": ns.max_seq_length or PRESETS[ns.preset]["max_seq_length"], "seed": seed,
               "max_train_samples": args.finetune_max_train_samples,
               "max_eval_samples": args.finetune_max_eval_samples}
    target = run_dir / "finetune" / task
    record = _read_json(run_dir / "run.json") or {}
    result = _read_json(target / "results.json")
    if result is not None and (record.get("finetune_settings") or {}).get(task) == options:
        return result
    result = finetune(run_dir / "final" / "discriminator", task, target, **options, progress=not ns.no_progress)
    record.setdefault("finetune_settings", {})[task] = options
    atomic_write_text(json.dumps(record, indent=1), run_dir / "run.json", what="run record")
    return result


def _run_metrics(run_dir: Path, evaluation: dict, finetuned: dict | None, task: str | None) -> dict:
    """One run's numbers for the table: the evaluation, the training correction rate, the fine-tuning metric."""
    summary = _read_json(run_dir / "summary.json") or {}
    metrics = {k: v for k, v in evaluation.items() if k != "reasons"}
    metrics["correction_rate"] = summary.get("correction_rate")
    if finetuned is not None:
        from electra.finetune import primary_metric

        metrics[f"{task}_{primary_metric(task)}"] = finetuned.get(primary_metric(task))
    return metrics


def compare(args) -> dict:
    """Train, evaluate (and fine-tune) every variant × seed of ``args`` (:func:`parse_args`), then write
    ``compare.json``, ``compare.md`` and ``compare.png`` in ``args.output_dir``.  Returns compare.json's dict."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("electra-compare runs in one process; under torchrun, run electra-pretrain per variant")
    out = prepare_output_directory(args.output_dir, argument="--output-dir")
    if args.pretrain.corpus_pattern:  # evaluate_model takes no pattern: it reads the folder's default files
        print("electra-compare: warning: --corpus-pattern is not passed to the evaluation, which reads the corpus "
              "folder's default files (*.txt and extension-less); its held-out split may differ", file=sys.stderr)
    tables = _tables(args, out)
    runs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    progress = None
    if not args.pretrain.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(runs), desc="electra-compare", unit="run", position=1, dynamic_ncols=True)
    results, reasons, histories = {}, {}, {}
    try:
        for variant, seed in runs:
            try:
                run_dir = _train(args, variant, seed, tables, progress)
                evaluation = _evaluate(args, run_dir, seed, tables[0])
                finetuned = _finetune(args, run_dir, seed) if args.finetune else None
            except (ValueError, TypeError, LookupError, OSError, MemoryError, NonFiniteLossError) as error:
                raise RunFailed(f"{variant} seed {seed}: {error_line(error)} (finished runs are kept; rerun to "
                                "continue)", 1 if isinstance(error, NonFiniteLossError) else 2) from error
            results.setdefault(variant, {})[seed] = _run_metrics(run_dir, evaluation, finetuned, args.finetune)
            reasons.setdefault(variant, {})[seed] = {**(evaluation.get("reasons") or {}), **{
                f"{args.finetune}_{key}": why for key, why in ((finetuned or {}).get("reasons") or {}).items()}}
            histories.setdefault(variant, []).append(_read_json(run_dir / "history.json") or [])
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()
    return _report(args, out, results, reasons, histories)


def _report(args, out: Path, results: dict, reasons: dict, histories: dict) -> dict:
    columns = list(COLUMNS)
    if args.finetune:
        from electra.finetune import primary_metric

        metric = primary_metric(args.finetune)
        kind = "number" if metric in ("matthews", "spearman", "pearson") else "percent"
        columns.append((f"{args.finetune}_{metric}", f"{args.finetune} {metric}", kind))
    report, table = write_report(out, results, reasons, histories, flags=VARIANTS, columns=columns,
                                 pretrain_argv=args.pretrain_argv, finetune=args.finetune)
    print(table, end="")
    print(f"written: {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return report


def main(argv=None) -> int:
    """Run the command: 0 on success, 1 when a run's loss went non-finite, 2 for bad arguments or inputs (one line
    on stderr, naming the variant and seed of a failed run)."""
    args = parse_args(argv)
    return run_tool("electra-compare", lambda: (compare(args), 0)[1], errors=(RunFailed,),
                    status_of=lambda error: getattr(error, "status", 2))


if __name__ == "__main__":
    raise SystemExit(main())
