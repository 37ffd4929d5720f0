"""Files the trainer writes and reads: atomic checkpoints, the history, the loss-curve plot.

Checkpoints hold only tensors and plain values (numbers, str, lists, dicts) and are read with
``torch.load(weights_only=True)`` (:func:`tnops.io.load_file`): a crafted checkpoint cannot run code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from tnops.io import atomic_save, atomic_write, atomic_write_text, load_file, require_keys

__all__ = ["CHECKPOINT_KEYS", "atomic_save", "load_checkpoint", "plot_history", "write_history"]

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "data", "step", "history", "rng")
CHECKPOINT_WHAT = "electra-pretrain checkpoint"


def load_checkpoint(path) -> dict:
    """A checkpoint written by electra-pretrain, read without unpickling any code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupt, truncated, not a checkpoint, holds anything besides tensors and
            plain values, lacks one of :data:`CHECKPOINT_KEYS`, or its step or history records have the wrong
            types (the message names the file and the field).
    """
    state = load_file(path, what=CHECKPOINT_WHAT, argument="--resume")
    require_keys(state, CHECKPOINT_KEYS, path, what=CHECKPOINT_WHAT, argument="--resume")
    try:
        _expect(state["step"], _is_count, "an int >= 0", "'step'")
        _check_history(state["history"])
    except ValueError as error:
        raise ValueError(f"--resume: {path} is not a valid {CHECKPOINT_WHAT}: {error}") from None
    return state


# What each history record holds (electra.trainer.log_steps, evaluate_into_history, pretrain.evaluate_checkpoint).
_RECORD_NUMBERS = ("loss", "gen_loss", "disc_loss", "sr_loss", "correction_rate", "lr", "tokens_per_second")
_RECORD_COUNTS = ("corrected", "masked", "nonfinite_skipped")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value) -> bool:  # None: a non-finite value written to history.json
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _expect(value, test, wanted: str, field: str) -> None:
    if not test(value):
        text = repr(value)
        raise ValueError(f"{field} must be {wanted}, got {type(value).__name__} "
                         f"{text if len(text) <= 40 else text[:37] + '...'}")


def _check_history(history) -> None:
    """ValueError naming the record and field unless ``history`` is a list of records as the trainer writes them
    (a tampered checkpoint would otherwise fail later, in the summary or the plot, with a traceback)."""
    _expect(history, lambda value: isinstance(value, list), "a list of records", "'history'")
    for i, record in enumerate(history):
        field = f"'history'[{i}]"
        _expect(record, lambda value: isinstance(value, dict), "a dict", field)
        _expect(record.get("step"), _is_count, "an int >= 0", f"{field}['step']")
        for key in _RECORD_COUNTS:
            if key in record:
                _expect(record[key], _is_count, "an int >= 0", f"{field}[{key!r}]")
        for key in _RECORD_NUMBERS:
            if key in record:
                _expect(record[key], _is_number, "a number", f"{field}[{key!r}]")
        if "skipped" in record:
            _expect(record["skipped"], lambda value: isinstance(value, bool), "a bool", f"{field}['skipped']")
        if "init_from" in record:
            _expect(record["init_from"], lambda value: isinstance(value, str), "a str", f"{field}['init_from']")
        if "eval" in record:
            evaluation = record["eval"]
            _expect(evaluation, lambda value: isinstance(value, dict), "a dict", f"{field}['eval']")
            for key, value in evaluation.items():
                _expect(value, _is_number, "a number", f"{field}['eval'][{key!r}]")


def _json_safe(value):
    """NaN/inf floats (the losses of skipped steps) become None: history.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_history(history: list[dict], path) -> Path:
    """``history.json`` (one record per step), written atomically; non-finite numbers are written as null."""
    return atomic_write_text(json.dumps(_json_safe(history), indent=1), path, what="history")


def plot_history(history: list[dict], path) -> Path:
    """PNG of the training losses (and held-out losses where evaluated) against the step, written atomically.

    Steps without an evaluation (``--eval-batches 0``, an empty held-out split) simply have no held-out
    point; skipped steps (non-finite losses) leave gaps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nan = float("nan")
    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(axes, ("gen_loss", "disc_loss", "loss"),
                              ("generator MLM (kept rows)", "discriminator RTD", "total")):
        ax.plot(steps, [r.get(key, nan) for r in history], label="train", lw=1)
        evals = [(r["step"], r["eval"][key]) for r in history if key in (r.get("eval") or {})]
        if evals:
            ax.plot(*zip(*evals), "o-", label="held-out")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    counted = [r for r in history if "masked" in r]  # training steps (not a step-0 evaluation record)
    rates = [100 * r["corrected"] / max(r["masked"], 1) for r in counted]
    twin = axes[0].twinx()
    twin.plot([r["step"] for r in counted], rates, color="tab:green", lw=0.6, alpha=0.35)
    window = max(5, len(counted) // 20)  # the rolling mean shows the trend a single step's count hides
    if len(counted) >= window:
        masked = [r["masked"] for r in counted]
        corrected = [r["corrected"] for r in counted]
        rolling = [100 * sum(corrected[i - window:i]) / max(sum(masked[i - window:i]), 1)
                   for i in range(window, len(counted) + 1)]
        twin.plot([r["step"] for r in counted[window - 1:]], rolling, color="tab:green", lw=1.8,
                  label=f"hard correction, {window}-step mean")
        twin.legend(loc="center right")
    twin.set_ylabel("hard-correction rate (% of masked)", color="tab:green")
    fig.tight_layout()
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110), what="plot")
    finally:
        plt.close(fig)
    return Path(path)
