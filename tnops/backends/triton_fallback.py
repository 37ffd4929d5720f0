"""The default dispatch's Triton backend (``triton-or-torch``): the ``triton`` backend, falling back to the ``torch``
backend when the Triton path cannot run on this GPU.

``tnops.backends.select`` hands this one out when no backend is named (``backend=None`` and no ``TNOPS_BACKEND``) on
a CUDA device; ``backend="triton"`` or ``TNOPS_BACKEND=triton`` give the plain ``triton`` backend, which raises the
same failures instead.  A failure is one of Triton's own errors at launch (``triton.errors.TritonError``: a compile
error, ``OutOfResources`` for shared memory or registers, a ptxas error) or a ``RuntimeError`` of the Triton driver
(``Triton Error [CUDA]: ...``, e.g. no kernel image for this architecture); argument errors (ValueError, TypeError)
are the caller's and always raise.  After a failure of an op (the LM head's forward or backward, or RTD) on a
(device, dtype), every later call of that op there runs the torch backend directly (no second compile attempt), and
one ``RuntimeWarning`` names the reason.  GPUs the kernels refuse outright (compute capability < 7.5, bfloat16
before 8.0) are sent to the torch backend by ``select`` itself, with one warning (``hardware_refusal``).

The row contract is the ``triton`` backend's (no fused gradients, its ``aux_rows``): a forward that falls back
returns the torch backend's statistics with an all-zero ``sr_aux`` of the Triton layout, which no backward reads,
as the (op, device, dtype) is then marked and the backward runs the torch backend's too.
"""
from __future__ import annotations

import warnings

import torch

from tnops.backends import torch_chunked
from tnops.backends import triton as strict
from tnops.ops.config import GPU_DTYPES, Target, gpu_refusal
from tnops.outputs import MLMRows

NAME = "triton-or-torch"
FUSES_GRADIENTS = strict.FUSES_GRADIENTS
aux_rows = strict.aux_rows
unavailable = strict.unavailable
refuses = strict.refuses
_failed: dict[tuple[str, str, torch.dtype], str] = {}  # (op, device, dtype) -> why the Triton path failed there


def hardware_refusal(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why this CUDA GPU cannot run the kernels for ``dtype`` (``config.gpu_refusal``), or None (also for devices and
    dtypes that are no GPU's matter: CPU tensors, float64)."""
    if device.type != "cuda" or dtype not in GPU_DTYPES:
        return None
    return gpu_refusal(Target.of(device), dtype)


def launch_failure(error: BaseException) -> str | None:
    """The reason to fall back for ``error``, or None when it is not the GPU's (an argument error: raise it)."""
    try:
        from triton.errors import TritonError
    except ImportError:  # an older Triton
        TritonError = ()  # noqa: N806
    if (TritonError and isinstance(error, TritonError)) or (
            isinstance(error, RuntimeError) and str(error).startswith("Triton Error")):
        text = (getattr(error, "error_message", None) or str(error)).strip()  # a CompilationError's own message
        return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"
    return None


def failure(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the Triton path of ``op`` (``"mlm"``: the LM head, forward and backward; ``"rtd"``) failed before on
    ``device`` for ``dtype`` (None: it has not)."""
    return _failed.get((op, str(device), dtype))


def run_or_fall_back(op: str, device: torch.device, dtype: torch.dtype, triton_call, torch_call):
    """``triton_call()``, or ``torch_call()`` when the Triton path of ``op`` fails on ``device`` for ``dtype`` (now,
    with one warning, or before); argument errors raise."""
    key = (op, str(device), dtype)
    if key not in _failed:
        try:
            return triton_call()
        except Exception as error:
            reason = launch_failure(error)
            if reason is None:
                raise
            _failed[key] = reason
            what = "LM-head" if op == "mlm" else "RTD"
            warnings.warn(f"tnops: the Triton {what} kernels cannot run for {dtype} on {device} ({reason}); the torch "
                          "backend computes these calls instead (backend='triton' or TNOPS_BACKEND=triton raises "
                          "this error)", RuntimeWarning, stacklevel=2)
    return torch_call()


def mlm_forward(inputs, weight, bias, labels, row_ids, table, sr_embedding, options, want_grads,
                coefficients=None) -> MLMRows:
    def fallback() -> MLMRows:
        rows = torch_chunked.mlm_forward(inputs, weight, bias, labels, row_ids, table, sr_embedding, options,
                                         (False, False, False), coefficients)
        aux = rows.lse.new_zeros((strict.aux_rows(sr_embedding is not None), labels.shape[0]))
        return MLMRows(rows.nll, rows.lse, rows.zmean, rows.predictions, rows.corrected, rows.sr, aux, None)

    return run_or_fall_back("mlm", inputs.device, inputs.dtype, lambda: strict.mlm_forward(
        inputs, weight, bias, labels, row_ids, table, sr_embedding, options, want_grads, coefficients), fallback)


def mlm_backward(inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux, options, want):
    args = (inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux, options, want)
    return run_or_fall_back("mlm", inputs.device, inputs.dtype, lambda: strict.mlm_backward(*args),
                lambda: torch_chunked.mlm_backward(*args))


def rtd_rows(logits, corrupted, original, attention_mask, corrected):
    args = (logits, corrupted, original, attention_mask, corrected)
    return run_or_fall_back("rtd", logits.device, logits.dtype, lambda: strict.rtd_rows(*args),
                lambda: torch_chunked.rtd_rows(*args))
