"""Replaced-token detection BCE with the hard-correction label flip, loss and gradient in one pass (Triton).

Per position: ``label = (corrupted != original) & !corrected``, ``valid = attention_mask != 0``;
``loss = valid · (max(x, 0) - x·label + log1p(exp(-|x|)))`` and ``dloss/dx = valid · (sigmoid(x) - label)``
are written together, so backward is one multiply.  The reduction is left to the caller.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tnops.ops.config import check_inputs

BLOCK = 1024


@triton.jit
def _rtd_kernel(logits_ptr, corrupted_ptr, original_ptr, mask_ptr, corrected_ptr, loss_ptr, grad_ptr, N,
                HAS_MASK: tl.constexpr, HAS_CORRECTED: tl.constexpr, BLOCK: tl.constexpr):
    """Per-position BCE-with-logits and its derivative (see module docstring)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    x = tl.load(logits_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    label = tl.load(corrupted_ptr + offs, mask=ok, other=0) != tl.load(original_ptr + offs, mask=ok, other=0)
    if HAS_CORRECTED:
        label = label & (tl.load(corrected_ptr + offs, mask=ok, other=0) == 0)
    valid = ok
    if HAS_MASK:
        valid = valid & (tl.load(mask_ptr + offs, mask=ok, other=0) != 0)
    y = label.to(tl.float32)
    loss = tl.maximum(x, 0.0) - x * y + tl.log(1.0 + tl.exp(-tl.abs(x)))
    grad = 1.0 / (1.0 + tl.exp(-x)) - y
    tl.store(loss_ptr + offs, tl.where(valid, loss, 0.0), mask=ok)
    tl.store(grad_ptr + offs, tl.where(valid, grad, 0.0), mask=ok)


def rtd_forward(logits, corrupted, original, attention_mask=None, corrected=None):
    """Per-position loss and gradient, both fp32 ``[N]``, for ``[N]`` inputs on one CUDA device.

    Inputs of any strides (stride 0 included) are read as their values: each is flattened into a contiguous
    tensor first (a copy only when it is not one).  Float dtypes the kernel cannot compute are refused.
    """
    check_inputs(logits=logits)
    flat = lambda t: None if t is None else t.reshape(-1).contiguous()
    logits, corrupted, original, attention_mask = map(flat, (logits, corrupted, original, attention_mask))
    n = logits.numel()
    loss = torch.empty(n, dtype=torch.float32, device=logits.device)
    grad = torch.empty_like(loss)
    mask = attention_mask if attention_mask is not None else logits
    corr = flat(corrected).view(torch.uint8) if corrected is not None else logits
    _rtd_kernel[(triton.cdiv(max(n, 1), BLOCK),)](
        logits, corrupted, original, mask, corr, loss, grad, n,
        HAS_MASK=attention_mask is not None, HAS_CORRECTED=corrected is not None, BLOCK=BLOCK)
    return loss, grad


class FusedRTD(torch.autograd.Function):
    """``FusedRTD.apply(logits [N], corrupted [N], original [N], mask [N] | None, corrected [N] | None) -> loss [N]``."""

    @staticmethod
    def forward(ctx, logits, corrupted, original, attention_mask, corrected):
        loss, grad = rtd_forward(logits, corrupted, original, attention_mask, corrected)
        ctx.save_for_backward(grad)
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return (grad * grad_loss).to(ctx.logits_dtype), None, None, None, None
