"""Replaced-token detection BCE with the hard-correction label flip, loss and gradient in one pass: the
``@triton.jit`` kernel.  Its launcher is ``rtd.py``.

Per position: ``label = (corrupted != original) & !corrected``, ``valid = attention_mask != 0``;
``loss = valid · (max(x, 0) - x·label + log1p(exp(-|x|)))`` and ``dloss/dx = valid · (sigmoid(x) - label)``
are written together, so backward is one multiply.  The reduction is left to the caller.
"""
from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 1024  # positions per program: a memory-bound elementwise pass, one wide tile is enough


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
