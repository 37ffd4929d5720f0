"""A Hugging Face ``TrainerCallback`` that logs how often hard correction fired, per logging interval."""
from __future__ import annotations

from transformers import TrainerCallback

from tnops.integrations.transformers import correction_counts

__all__ = ["TrueNegativeCallback"]


def _patched_module(model):
    """The module ``apply_true_negatives`` patched, inside whatever wraps it (DDP, PEFT, torch.compile)."""
    if model is None:
        return None
    return next((module for module in model.modules() if "_tnops_patch" in vars(module)), None)


class TrueNegativeCallback(TrainerCallback):
    """Adds the hard-correction statistics of each logging interval to the Trainer's training logs.

    Every training log (the ones holding ``loss``) gains ``correction_rate`` (corrected / masked positions),
    ``corrected_tokens`` and ``masked_tokens``, summed over the training forwards since the previous log (all
    micro-batches of gradient accumulation; this process's batches under DDP). The counts stay on the device
    between logs, so reading them is one host sync per log, where the Trainer syncs anyway.

    ``Trainer(..., callbacks=[TrueNegativeCallback()])`` puts it before the progress bar and printer, which then
    show the values, and they are stored in ``trainer.state.log_history``. The Trainer runs ``report_to``
    integrations (TensorBoard, W&B, ...) *before* user callbacks; for them to see the values too, insert it
    first: ``trainer.callback_handler.callbacks.insert(0, TrueNegativeCallback())``.
    """

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        patched = _patched_module(model)
        if logs is None or patched is None or "loss" not in logs:  # evaluation and end-of-training logs
            return
        corrected, masked = correction_counts(patched, reset=True)
        entry = {"correction_rate": corrected / max(masked, 1), "corrected_tokens": corrected,
                 "masked_tokens": masked}
        logs.update(entry)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(entry)  # the Trainer stored a copy of logs before calling back
