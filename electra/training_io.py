"""Files the trainer writes: atomic checkpoints and the loss-curve plot."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def atomic_save(obj, path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def plot_history(history: list[dict], path) -> Path:
    """PNG of the training losses (and held-out losses where evaluated) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(axes, ("gen_loss", "disc_loss", "loss"),
                              ("generator MLM (kept rows)", "discriminator RTD", "total")):
        ax.plot(steps, [r[key] for r in history], label="train", lw=1)
        evals = [(r["step"], r["eval"][key]) for r in history if "eval" in r]
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
