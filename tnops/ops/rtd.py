"""Replaced-token detection BCE with the hard-correction label flip: the launcher of ``rtd_kernels.py``.

``rtd_forward`` returns the per-position loss and its derivative; ``tnops::rtd_rows`` (``tnops/_ops.py``) saves
the derivative for backward, and the caller reduces the loss.  Nothing here synchronises with the host.
"""
from __future__ import annotations

import torch
import triton

from tnops.ops import rtd_kernels as kernels
from tnops.ops.config import check_inputs, on_inputs_device


@on_inputs_device
def rtd_forward(logits, corrupted, original, attention_mask=None, corrected=None):
    """Per-position loss and gradient, both fp32 ``[N]``, for ``[N]`` inputs on one CUDA device.

    Args:
        logits: float ``[N]``; corrupted, original: int ``[N]``; attention_mask: ``[N]`` (0 = padding) or None;
        corrected: bool ``[N]`` or None.
    Returns:
        ``(loss [N], dloss/dlogits [N])``, float32, 0 at padding.

    Runs under ``logits``' device (``config.on_inputs_device``); inputs on another device are refused by name.

    Inputs of any strides (stride 0 included) are read as their values: each is flattened into a contiguous
    tensor first (a copy only when it is not one).  Float dtypes the kernel cannot compute are refused
    before it runs (``config.check_inputs``).
    """
    check_inputs(logits=logits, corrupted=corrupted, original=original, attention_mask=attention_mask,
                 corrected=corrected)
    flat = lambda t: None if t is None else t.reshape(-1).contiguous()  # noqa: E731
    logits, corrupted, original, attention_mask = map(flat, (logits, corrupted, original, attention_mask))
    n = logits.numel()
    loss = torch.empty(n, dtype=torch.float32, device=logits.device)
    grad = torch.empty_like(loss)
    mask = attention_mask if attention_mask is not None else logits
    corr = flat(corrected).view(torch.uint8) if corrected is not None else logits
    kernels._rtd_kernel[(triton.cdiv(max(n, 1), kernels.BLOCK),)](
        logits, corrupted, original, mask, corr, loss, grad, n,
        HAS_MASK=attention_mask is not None, HAS_CORRECTED=corrected is not None, BLOCK=kernels.BLOCK)
    return loss, grad
