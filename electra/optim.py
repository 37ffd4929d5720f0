"""ELECTRA's optimiser and schedule: Adam without bias correction (BERT/ELECTRA's AdamWeightDecayOptimizer),
decoupled weight decay except on LayerNorm and biases, linear warm-up then linear decay to zero."""
from __future__ import annotations

import torch
from torch import nn


class AdamNoBiasCorrection(torch.optim.Optimizer):
    """``m ← β1 m + (1-β1) g``, ``v ← β2 v + (1-β2) g²``, ``p ← p - lr · (m / (√v + ε) + wd · p)``.

    Unlike ``torch.optim.AdamW`` the moments are not bias-corrected, as in the ELECTRA recipe (DESIGN §5).
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        if lr < 0 or eps <= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ValueError(f"invalid Adam hyper-parameters: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None, *, apply: torch.Tensor | None = None):
        """One update; with ``apply`` (a 0-d bool tensor) only where it holds, decided on the device: when it is
        False the moments and parameters keep their values exactly, and nothing is read back to the host."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if apply is not None:  # work on copies, committed below only where apply holds
                    m, v = m.clone(), v.clone()
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                if apply is None:
                    p.add_(update, alpha=-group["lr"])
                    continue
                # torch.where, not a product: a skipped step's NaN/inf never reaches the state
                state["exp_avg"].copy_(torch.where(apply, m, state["exp_avg"]))
                state["exp_avg_sq"].copy_(torch.where(apply, v, state["exp_avg_sq"]))
                p.copy_(torch.where(apply, p.add(update, alpha=-group["lr"]), p))
        return loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and LayerNorm weights + biases without decay (tied Parameters once)."""
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, eps: float):
    """``"adam"`` (no bias correction, the recipe) or ``"adamw"`` (``torch.optim.AdamW``, its fused kernel where the
    parameters' device has one, so that :func:`step_where` decides on the device)."""
    groups = parameter_groups(model, weight_decay)
    if name == "adam":
        return AdamNoBiasCorrection(groups, lr=lr, eps=eps)
    if name == "adamw":
        try:
            return torch.optim.AdamW(groups, lr=lr, eps=eps, fused=True)
        except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
            return torch.optim.AdamW(groups, lr=lr, eps=eps)
    raise ValueError(f"optimizer: expected 'adam' or 'adamw', got {name!r}")


def step_where(optimizer: torch.optim.Optimizer, apply: torch.Tensor) -> None:
    """``optimizer.step()`` if the 0-d bool tensor ``apply`` holds, else no change at all, without a host read
    where the optimiser allows it.

    :class:`AdamNoBiasCorrection` selects on the device; torch's fused Adam/AdamW skip on the device through
    their ``found_inf`` input (the flag ``torch.amp.GradScaler`` uses); any other optimiser reads ``apply``
    on the host (one synchronisation).
    """
    if isinstance(optimizer, AdamNoBiasCorrection):
        optimizer.step(apply=apply)
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = (~apply).float()  # 1.0: the fused kernel leaves parameters, moments and step alone
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif bool(apply):
        optimizer.step()


def warmup_linear_decay(optimizer, warmup_steps: int, total_steps: int):
    """LambdaLR: ``step / warmup`` up to ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
