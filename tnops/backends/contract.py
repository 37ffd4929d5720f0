"""The backend contract as a ``typing.Protocol``: what a module must define to serve ``tnops::mlm_head``.

The registry (``tnops.backends``) checks every module it loads against ``Backend`` (``problems``): a missing
member, or a function whose parameters are not the contract's, makes the backend unavailable with that reason,
instead of failing somewhere inside a training step.

The row contract in one paragraph (``tnops/_ops.py`` has the maths): ``mlm_forward`` returns per-row statistics
``nll = lse - z_gold``, ``lse``, ``zmean`` (``tnops.outputs.MLMRows``), the prediction and the correction flag;
``mlm_backward`` turns per-row coefficients ``coef [3, N] = (α, γ, δ)`` into the gradients of
``dz = α·softmax(z) - γ·onehot(gold) - δ/V``; a backend that ``FUSES_GRADIENTS`` also takes the kept rows'
coefficients ``(a, b, c, d)`` in its forward (α = a + b·lse, γ = c, δ = d) and returns their gradients.  No backend
knows which loss the coefficients make.
"""
from __future__ import annotations

import inspect
from types import ModuleType
from typing import Protocol, runtime_checkable

import torch

from tnops.options import MLMOptions
from tnops.outputs import MLMRows


@runtime_checkable
class Backend(Protocol):
    NAME: str
    FUSES_GRADIENTS: bool  # mlm_forward can return the gradients of the kept rows' objective

    def unavailable(self) -> str | None:
        """Why the backend cannot run in this installation (None: it can)."""

    def refuses(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why it cannot compute tensors of this device and dtype (None: it can)."""

    def aux_rows(self, has_sr: bool) -> int:
        """Rows ``K`` of the ``sr_aux [K, N]`` its ``mlm_forward`` returns (0: None); the fake kernel allocates them."""

    def mlm_forward(self, inputs, weight, bias, labels, row_ids, table, sr_embedding, options: MLMOptions,
                    want_grads: tuple[bool, bool, bool], coefficients: tuple[float, float, float, float]) -> MLMRows:
        """Per-row statistics of ``inputs [N, E]`` (``weight [V, E]``, or ``None``: inputs are ``[N, V]`` logits)."""

    def mlm_backward(self, inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux,
                     options: MLMOptions, want: tuple[bool, bool, bool, bool]):
        """``(d_inputs, d_weight, d_bias, d_sr_embedding)`` of ``coef [3, N]`` and ``Σ sr_coef · sr``."""

    def rtd_rows(self, logits, corrupted, original, attention_mask, corrected):
        """Per-position RTD BCE and its derivative, ``[N]`` each (``tnops.losses.rtd_rows`` is the shared one)."""


def _parameters(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values() if p.name != "self"]


def problems(module: ModuleType) -> str | None:
    """Why ``module`` does not implement ``Backend`` (None: it does): missing members, or functions whose
    parameter names differ from the contract's."""
    missing = [name for name in ("NAME", "FUSES_GRADIENTS") if not hasattr(module, name)]
    wrong = []
    for name, member in vars(Backend).items():
        if name.startswith("_") or not callable(member):
            continue
        function = getattr(module, name, None)
        if function is None or not callable(function):
            missing.append(name)
            continue
        try:
            # a shared function (rtd_rows = tnops.losses.rtd_rows) may name its parameters its own way: arity only
            got, want = _parameters(function), _parameters(member)
        except (TypeError, ValueError):  # a builtin without a signature
            continue
        if len(got) != len(want) or (function.__module__ == module.__name__ and got != want):
            wrong.append(f"{name}({', '.join(got)}) should be {name}({', '.join(want)})")
    if missing or wrong:
        return "does not implement the backend contract (tnops.backends.contract.Backend): " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + wrong)
    return None
