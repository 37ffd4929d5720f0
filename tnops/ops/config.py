"""Launch configuration of the Triton kernels: the one place block sizes and warps are chosen (``head_config``),
and the one place that says which devices and dtypes the kernels compute (``refusal``, used by the backend's
``refuses`` to choose a backend and by ``check_inputs`` before any kernel runs).  Imports no Triton: the
backend registry reads ``refusal`` on machines without it.

The GPU tiles below are the largest that ``ptxas -v`` (Triton 3.9, sm_90a) compiles without register
spills, per dtype, for the binaries the JIT builds at launch (unit strides, 16-aligned pointers and widths);
``python -m tnops.ops.compile_check`` prints registers and spills of each kernel at these tiles, and a test
keeps them spill-free.  They have not been tuned by timing on a GPU yet.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tnops.backends import interpreting

# (block_n, block_v, block_e, num_warps) of the forward and backward LM-head kernels on a GPU, by input
# dtype.  fp32 uses IEEE dots on CUDA cores, whose operands take more registers: narrower K-steps.
_GPU_FORWARD = {"half": (64, 128, 64, 8), "fp32": (64, 64, 16, 8)}
_GPU_BACKWARD = {"half": (128, 128, 32, 8), "fp32": (64, 128, 16, 8)}
# Given logits (mlm_loss): no dot, the tiles stream the [N, V] logits (block_e unused).  Row-stride loads of
# V-wide rows (V = 30522 is no multiple of 16) are not vectorised, so the tiles stay small.
_GPU_LOGITS_FORWARD = (8, 256, 16, 4)
_GPU_LOGITS_BACKWARD = (16, 256, 16, 8)
_INTERPRETER = (32, 256, 64, 4)  # numpy executes each program: few, large tiles are fastest
_INTERPRETER_ROW_TILE = (32, 64)
_ROW_TILE = (32, 32)  # combine and SR-backward kernels: (rows, embedding columns) per step
_BWD_GROUP_N = 8  # backward programs run in groups of 8 row blocks × every vocabulary tile (see the kernel)


@dataclass(frozen=True)
class HeadConfig:
    """Tiles of the fused-head kernels.

    ``block_*``, ``splits``, ``num_warps``, ``num_stages``: the forward kernel (``splits`` programs share the
    vocabulary of one row block).  ``bwd_*``: the backward kernel (``bwd_group_n``: row blocks per program
    group).  ``row_block_n``/``row_block_e``: the per-row kernels (combine, SR backward).
    """

    block_n: int
    block_v: int
    block_e: int
    splits: int
    num_warps: int
    num_stages: int
    bwd_block_n: int
    bwd_block_v: int
    bwd_block_e: int
    bwd_num_warps: int
    bwd_group_n: int
    row_block_n: int
    row_block_e: int


def _fit_width(block_e: int, width: int) -> int:
    """``block_e`` no wider than the next power of two of ``width`` (≥ 16, the smallest ``tl.dot`` K)."""
    return min(block_e, max(16, 1 << (max(width, 1) - 1).bit_length()))


def head_config(n_rows: int, vocab_size: int, width: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32, block_n: int | None = None, block_v: int | None = None,
                block_e: int | None = None, splits: int | None = None, logits: bool = False) -> HeadConfig:
    """Tiles of the LM-head kernels for ``[n_rows, width] @ [vocab_size, width]ᵀ`` in ``dtype``.

    The forward pass splits the vocabulary over ``splits`` programs per row block so that small-N shapes
    still fill the GPU; the partial (max, sum-exp, gold, best) rows are merged by a tiny combine kernel.
    Explicit ``block_*`` arguments set the tiles of the forward and backward kernels alike (tests use them
    to prove that samples do not depend on tiling).  ``logits=True``: the tiles of the given-logits variants
    (``mlm_loss``), which stream ``[N, V]`` logits instead of forming them by ``tl.dot``.
    """
    if interpreting():
        forward, backward, row_tile = _INTERPRETER, _INTERPRETER, _INTERPRETER_ROW_TILE
        target_programs = 2
    else:
        kind = "fp32" if dtype == torch.float32 else "half"
        forward, backward, row_tile = _GPU_FORWARD[kind], _GPU_BACKWARD[kind], _ROW_TILE
        if logits:
            forward, backward = _GPU_LOGITS_FORWARD, _GPU_LOGITS_BACKWARD
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device is not None and \
            device.type == "cuda" else 132
        target_programs = 2 * sms
    forward = [given or default for given, default in zip((block_n, block_v, block_e), forward)] + [forward[3]]
    backward = [given or default for given, default in zip((block_n, block_v, block_e), backward)] + [backward[3]]
    bn, bv, be, warps = forward
    if bv % 4:
        raise ValueError(f"block_v: expected a multiple of 4 (one Philox call serves 4 vocabulary ids), got {bv}")
    row_blocks = -(-max(n_rows, 1) // bn)
    vocab_blocks = -(-max(vocab_size, 1) // bv)
    if splits is None:
        splits = max(1, min(vocab_blocks, -(-target_programs // row_blocks)))
    return HeadConfig(bn, bv, _fit_width(be, width), splits, num_warps=warps, num_stages=3,
                      bwd_block_n=backward[0], bwd_block_v=backward[1], bwd_block_e=_fit_width(backward[2], width),
                      bwd_num_warps=backward[3], bwd_group_n=_BWD_GROUP_N,
                      row_block_n=row_tile[0], row_block_e=row_tile[1])


GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def device_refusal(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on ``device``, or None: CUDA, or any device under the interpreter."""
    if device.type != "cuda" and not interpreting():
        return f"the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for tests on CPU), got {device}"
    return None


def refusal(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the Triton kernels cannot compute ``dtype`` tensors on ``device``, or None when they can.

    On a GPU float32, bfloat16 and float16; never float64.  Under the interpreter (``TRITON_INTERPRET=1``)
    float32 only: its bfloat16 ``tl.dot`` returns garbage (triton-lang/triton#11584).  Integer dtypes (index
    tensors) are judged by their device alone.
    """
    reason = device_refusal(device)
    if reason is not None or not dtype.is_floating_point:
        return reason
    if interpreting() and dtype != torch.float32:
        return (f"the Triton interpreter (TRITON_INTERPRET=1) computes float32 only, not {dtype} (its bfloat16 "
                "tl.dot is broken upstream, triton-lang/triton#11584); pass float32 tensors or use backend='torch'")
    if dtype not in GPU_DTYPES:
        return (f"the Triton kernels compute float32, bfloat16 and float16, not {dtype}; use backend='torch' "
                "(or TNOPS_BACKEND=torch)")
    return None


def check_inputs(**tensors: torch.Tensor | None) -> None:
    """Refuse, before any kernel runs, tensors the Triton kernels cannot compute with (``refusal``; None
    entries are skipped).

    Raises:
        ValueError: a tensor on a device the kernels cannot reach (``device_refusal``).
        TypeError: a float dtype they cannot compute there.
    """
    for name, value in tensors.items():
        if value is None:
            continue
        reason = device_refusal(value.device)
        if reason is not None:
            raise ValueError(f"{name}: {reason}")
        reason = refusal(value.device, value.dtype)
        if reason is not None:
            raise TypeError(f"{name}: {reason}")
