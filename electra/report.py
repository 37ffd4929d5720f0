"""The end of a pre-training run made readable: hard correction at work (paper Table 2 and Figure 3).

After the export, ``electra-pretrain`` runs the false-negative statistics of ``electra-fn-stats`` on the held-out
split with the trained generator (Gumbel samples, the run's synonym table), collects a few corrected predictions,
and writes ``OUTPUT_DIR/summary.json``:

* ``masked``, ``corrected``: masked predictions and hard corrections over the whole run (training steps);
* ``correction_rate``: their ratio; ``correction_rate_last_window``: the same over the last ``--log-every`` steps;
* ``fn_prediction_ratio``, ``fn_iteration_ratio``: fn-stats on the held-out split (fractions);
* ``fn_masked``, ``fn_sequences``: what those ratios were counted over;
* ``examples``: Figure-3-style corrected predictions (gold, prediction, context, synonyms);
* ``seconds``: wall time of the run, ``steps`` its length.
"""
from __future__ import annotations

import json
import time

from electra.fn_stats import false_negative_stats
from tnops.io import atomic_write_text

__all__ = ["correction_rates", "run_report"]

FN_BATCHES = 8  # held-out batches the end-of-run statistics read (as the demo's electra-fn-stats call)


def correction_rates(history: list[dict], window: int) -> dict:
    """``masked``, ``corrected`` and ``correction_rate`` over the run's step records, and the rate over the last
    ``window`` of them (``correction_rate_last_window``); rates are fractions, 0 when nothing was masked."""
    steps = [r for r in history if "masked" in r]
    last = steps[-max(window, 1):]
    masked, corrected = sum(r["masked"] for r in steps), sum(r["corrected"] for r in steps)
    last_masked, last_corrected = sum(r["masked"] for r in last), sum(r["corrected"] for r in last)
    return {"masked": masked, "corrected": corrected, "correction_rate": corrected / max(masked, 1),
            "correction_rate_last_window": last_corrected / max(last_masked, 1), "last_window_steps": len(last)}


def run_report(run, started: float, examples: int = 5) -> dict:
    """``summary.json`` of a finished run (rank 0): correction rates, held-out fn-stats and examples, wall time.

    Args:
        run: the ``electra.trainer.TrainingRun`` after ``finish_run``.
        started: ``time.perf_counter()`` when the run began.
        examples: corrected predictions to collect from the held-out split.
    Returns:
        The dict written to ``run.output_dir / "summary.json"``.
    """
    rates = correction_rates(run.history, getattr(run.args, "log_every", 10))
    split = run.dataset.eval if len(run.dataset.eval) else run.dataset.train
    fn = {}
    if run.model.synonyms is not None and len(split):
        generator = run.model.generator
        was_training = generator.training
        with run.autocast:
            fn = false_negative_stats(generator, run.tokenizer, run.model.synonyms, split,
                                      batch_size=run.micro_batch, max_batches=FN_BATCHES, seed=run.args.seed,
                                      max_predictions=run.config.max_predictions, examples=examples)
        generator.train(was_training)
    report = {**rates,
              "fn_prediction_ratio": fn.get("prediction_level"), "fn_iteration_ratio": fn.get("iteration_level"),
              "fn_masked": fn.get("masked"), "fn_sequences": fn.get("sequences"),
              "examples": fn.get("examples", []), "steps": run.step,
              "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_text(json.dumps(report, indent=1), run.output_dir / "summary.json", what="summary")
    return report
