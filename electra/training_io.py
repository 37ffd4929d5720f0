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
            plain values, or lacks one of :data:`CHECKPOINT_KEYS` (the message names the file).
    """
    state = load_file(path, what=CHECKPOINT_WHAT, argument="--resume")
    require_keys(state, CHECKPOINT_KEYS, path, what=CHECKPOINT_WHAT, argument="--resume")
    if not isinstance(state["step"], int) or not isinstance(state["history"], list):
        raise ValueError(f"--resume: {path} is not a valid {CHECKPOINT_WHAT}: 'step' must be an int and "  # noqa: TRY004
                         "'history' a list")
    return state


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
    rates = [r.get("correction_rate", 0.0) for r in history]
    twin = axes[0].twinx()
    twin.plot(steps, rates, color="tab:green", lw=0.8, alpha=0.6)
    twin.set_ylabel("hard-correction rate", color="tab:green")
    fig.tight_layout()
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110), what="plot")
    finally:
        plt.close(fig)
    return Path(path)
