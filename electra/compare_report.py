"""What ``electra-compare`` writes after its runs: means and spreads over seeds, ``compare.json``, the markdown
table ``compare.md`` and the held-out curves ``compare.png``.

Everything here works on plain numbers and the history records of ``electra-pretrain`` (:mod:`electra.training_io`):
a step record holds ``corrected`` and ``masked``; a record of an evaluation step also holds ``eval`` (held-out
``loss``, ``gen_loss``, ``disc_loss``, ``sr_loss``, ``gen_accuracy``, ``disc_accuracy``).  A metric that is None in
a run (e.g. the SimLex score without gensim) is left out of that metric's mean, never counted as 0.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from tnops.io import atomic_write, atomic_write_text

__all__ = ["COLUMNS", "aggregate", "format_cell", "markdown_table", "plot_curves", "summarize", "write_json",
           "write_report"]

# The table's columns: (metric key, heading, kind); "percent" cells show 100 × the fraction, "number" cells 3
# decimals.  The keys come from electra.eval.evaluate_model, except correction_rate (summary.json of the run).
COLUMNS = (
    ("mlm_accuracy", "MLM acc %", "percent"),
    ("mlm_accuracy_synonym", "MLM acc (syn.) %", "percent"),
    ("fn_prediction_ratio", "FN pred. %", "percent"),
    ("fn_iteration_ratio", "FN iter. %", "percent"),
    ("rtd_accuracy", "RTD acc %", "percent"),
    ("rtd_auc", "RTD AUC", "number"),
    ("simlex999", "SimLex-999 ρ", "number"),
    ("wordsim353", "WordSim-353 ρ", "number"),
    ("correction_rate", "HC rate (train) %", "percent"),
)


def _number(value) -> float | None:
    """``value`` as a finite float, or None (None, NaN, inf, bools and non-numbers are not measurements)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def aggregate(values) -> dict:
    """Mean and spread of one metric over seeds.

    Args:
        values: sequence of float or None, one per seed (None: the metric was not measured in that run).
    Returns:
        ``{"values": [...], "n": k, "mean": m, "std": s, "min": a, "max": b}`` over the k measured values:
        ``std`` is the sample standard deviation (n - 1 in the denominator), None when k < 2; mean, min and max
        are None when k == 0.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"values: expected a sequence of numbers or None, got {type(values).__name__}")
    values = [_number(v) for v in values]
    measured = [v for v in values if v is not None]
    n = len(measured)
    return {"values": values, "n": n,
            "mean": statistics.fmean(measured) if n else None,
            "std": statistics.stdev(measured) if n >= 2 else None,
            "min": min(measured) if n else None, "max": max(measured) if n else None}


def summarize(results: dict) -> dict:
    """Per variant, every numeric metric aggregated over its seeds.

    Args:
        results: ``{variant: {seed: {metric: value}}}`` (values float/int/None; other values are ignored).
    Returns:
        ``{variant: {metric: aggregate(...)}}``; a metric missing from a seed's dict counts as None there.
    """
    if not isinstance(results, dict):
        raise TypeError(f"results: expected {{variant: {{seed: {{metric: value}}}}}}, got {type(results).__name__}")
    summary = {}
    for variant, seeds in results.items():
        keys = []
        for metrics in seeds.values():
            keys += [k for k, v in metrics.items() if k not in keys and (v is None or _number(v) is not None)]
        summary[variant] = {key: aggregate([metrics.get(key) for metrics in seeds.values()]) for key in keys}
    return summary


def format_cell(stats: dict | None, kind: str = "number") -> str:
    """One table cell: ``mean ± std`` (``± std`` only with two or more measured seeds), ``n/a`` when nothing was
    measured.  ``kind`` ``"percent"`` shows 100 × the values with 2 decimals, ``"number"`` the values with 3."""
    if kind not in ("percent", "number"):
        raise ValueError(f"kind: expected 'percent' or 'number', got {kind!r}")
    if not stats or stats.get("mean") is None:
        return "n/a"
    scale, digits = (100.0, 2) if kind == "percent" else (1.0, 3)
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats.get("std") is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def markdown_table(summary: dict, columns=COLUMNS, seeds: dict | None = None) -> str:
    """The comparison as a markdown table: one row per variant (in ``summary``'s order), one column per metric.

    Args:
        summary: :func:`summarize`'s result.
        columns: ``(key, heading, kind)`` triples; a column no variant measured is left out.
        seeds: optional ``{variant: number of seeds}`` for a "seeds" column.
    Returns:
        str, the table with a trailing newline.
    """
    shown = [c for c in columns if any((summary[v].get(c[0]) or {}).get("n") for v in summary)]
    head = ["variant"] + (["seeds"] if seeds else []) + [heading for _, heading, _ in shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for variant, metrics in summary.items():
        cells = [variant] + ([str(seeds.get(variant, 0))] if seeds else [])
        cells += [format_cell(metrics.get(key), kind) for key, _, kind in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(data: dict, path) -> Path:
    """``data`` as indented JSON, written atomically; NaN/inf become null (strict JSON)."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return atomic_write_text(json.dumps(clean(data), indent=1), path, what="comparison")


# ------------------------------------------------------------------------------------------------ curves
def _eval_curve(histories: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Steps evaluated in every history and the mean over histories of ``eval[key]`` there."""
    per_run = [{r["step"]: _number(r["eval"].get(key)) for r in h if isinstance(r.get("eval"), dict)}
               for h in histories]
    steps = sorted(set.intersection(*(set(k for k, v in run.items() if v is not None) for run in per_run))
                   if per_run else set())
    return steps, [statistics.fmean(run[s] for run in per_run) for s in steps]


def _correction_curve(histories: list[list[dict]]) -> tuple[list[int], list[float]]:
    """Hard-correction rate (% of masked predictions) over training, pooled over the histories at the steps all of
    them have, as a rolling mean over max(5, steps / 20) steps (fewer when the run is shorter)."""
    per_run = [{r["step"]: (r["corrected"], r["masked"]) for r in h if "masked" in r} for h in histories]
    steps = sorted(set.intersection(*(set(run) for run in per_run)) if per_run else set())
    if not steps:
        return [], []
    corrected = [sum(run[s][0] for run in per_run) for s in steps]
    masked = [sum(run[s][1] for run in per_run) for s in steps]
    window = min(len(steps), max(5, len(steps) // 20))
    rates = [100.0 * sum(corrected[i - window:i]) / max(sum(masked[i - window:i]), 1)
             for i in range(window, len(steps) + 1)]
    return steps[window - 1:], rates


def plot_curves(histories: dict, path) -> Path:
    """``compare.png``: per variant (mean over its seeds) the held-out generator MLM loss, the held-out
    discriminator loss and the training hard-correction rate against the step.

    Args:
        histories: ``{variant: [history, ...]}``, one ``history.json`` record list per seed.
        path: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("gen_loss", "held-out generator MLM loss"), ("disc_loss", "held-out discriminator RTD loss"))
    for ax, (key, title) in zip(axes, panels):
        for variant, runs in histories.items():
            steps, values = _eval_curve(runs, key)
            if steps:
                ax.plot(steps, values, "o-" if len(steps) < 30 else "-", ms=3, label=variant)
        ax.set_title(title)
    for variant, runs in histories.items():
        steps, rates = _correction_curve(runs)
        if steps:
            axes[2].plot(steps, rates, "o-" if len(steps) < 30 else "-", ms=3, label=variant)
    axes[2].set_title("hard correction in training (% of masked)")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100), what="plot")
    finally:
        plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------------------------------------ the report
def write_report(out, results: dict, reasons: dict, histories: dict, *, flags: dict, columns=COLUMNS,
                 pretrain_argv=(), finetune: str | None = None) -> tuple[dict, str]:
    """``compare.json``, ``compare.md`` and ``compare.png`` in the folder ``out``.

    Args:
        results: ``{variant: {seed: {metric: value}}}``; reasons: ``{variant: {seed: {metric: why it is None}}}``.
        histories: ``{variant: [history.json records of each seed]}``.
        flags: ``{variant: electra-pretrain flags}``; columns: the table's ``(key, heading, kind)`` triples.
        pretrain_argv: the flags every run got; finetune: the fine-tuning task or None.
    Returns:
        ``(compare.json's dict, the markdown table)``.
    """
    out = Path(out)
    summary = summarize(results)
    seeds = sorted({seed for runs in results.values() for seed in runs})
    report = {"variants": {v: {"flags": list(flags[v]), "seeds": results[v], "metrics": summary[v],
                               "reasons": reasons.get(v, {})} for v in results},
              "seeds": seeds, "columns": [key for key, _, _ in columns], "pretrain_argv": list(pretrain_argv),
              "finetune": finetune}
    write_json(report, out / "compare.json")
    table = markdown_table(summary, columns, seeds={v: len(results[v]) for v in results})
    notes = sorted({f"{key}: {why}" for runs in reasons.values() for run in runs.values() for key, why in run.items()})
    spread = "mean ± sample standard deviation over seeds" if len(seeds) > 1 else "one seed"
    given = " ".join(pretrain_argv) or "(defaults)"
    text = f"# electra-compare\n\n{table}\n{spread}; electra-pretrain flags: `{given}`.\n"
    if notes:
        text += "\nNot measured:\n\n" + "".join(f"* {note}\n" for note in notes)
    atomic_write_text(text, out / "compare.md", what="comparison table")
    plot_curves(histories, out / "compare.png")
    return report, table
