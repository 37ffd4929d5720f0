"""Launch configuration of the Triton kernels: the one place block sizes and warps are chosen (``head_config``),
and the one place that says which GPUs and dtypes the kernels compute (``refusal``, used by the backend's
``refuses`` to choose a backend and by ``check_inputs`` before any kernel runs).  Imports no Triton: the
backend registry reads ``refusal`` on machines without it.

The GPU is an explicit input, a ``Target`` (compute capability, shared memory per block, multiprocessors):
``Target.of(device)`` reads a real device, ``Target.known(cc)`` stands for the GPUs below, so tests and
``python -m tnops.ops.compile_check --arch N`` ask for any of them without one.  Tiles are kept per known
capability (``TILES``); a capability in between or newer takes the nearest known lower one's tiles, and a GPU with
less shared memory per block than that one's (e.g. sm_120, 99 KiB) the tiles of the largest known capability that
fit it.  They are the largest tiles that ``ptxas -v`` (Triton 3.9) compiles for the binaries the JIT builds at
launch (unit strides, 16-aligned pointers and widths) without register spills on sm_80, 86, 89 and 90 and within
each target's shared memory (sm_75: within 64 KiB, spills reported, not avoided: Turing has no bf16 and Triton
gives its fp16 dots no tensor cores).  ``compile_check`` prints registers, spills and shared memory of each kernel
at these tiles; a slow test keeps them fitting.  They have not been tuned by timing on a GPU yet.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from tnops.backends import interpreting

KIB = 1024
# Shared memory one block may use (the opt-in limit, cudaDevAttrMaxSharedMemoryPerBlockOptin) on the known GPUs:
# T4 / RTX 20 (sm_75), A100 (sm_80), A10 / RTX 30 (sm_86), L4 / RTX 40 (sm_89), H100 / H200 (sm_90).
SHARED_MEMORY = {75: 64 * KIB, 80: 163 * KIB, 86: 99 * KIB, 89: 99 * KIB, 90: 227 * KIB}
MULTIPROCESSORS = {75: 40, 80: 108, 86: 84, 89: 58, 90: 132}  # the usual card of each: the forward's split heuristic
MIN_CAPABILITY = 75  # what Triton 3.x compiles for
BF16_CAPABILITY = 80  # bfloat16 arithmetic and tensor-core dots: Ampere and newer


@dataclass(frozen=True)
class Target:
    """A CUDA GPU as the tile choice sees it: compute capability ``cc`` (``major * 10 + minor``: 75, 80, 86, 89,
    90, ...), ``smem`` bytes of shared memory per block, ``sms`` multiprocessors."""

    cc: int
    smem: int
    sms: int = 132

    @classmethod
    def known(cls, cc: int) -> Target:
        """One of the GPUs of ``SHARED_MEMORY`` (a capability in between or newer: the nearest known lower one's
        limits)."""
        base = tile_capability(cls(cc, 1 << 30))
        return cls(cc, SHARED_MEMORY[base], MULTIPROCESSORS[base])

    @classmethod
    def of(cls, device: torch.device | int | None = None) -> Target:
        """The GPU of ``device`` (``torch.cuda.get_device_properties``)."""
        index = torch.device("cuda", device).index if isinstance(device, int) else getattr(device, "index", None)
        return _target_of(torch.cuda.current_device() if index is None else index)


@functools.cache
def _target_of(index: int) -> Target:
    props = torch.cuda.get_device_properties(index)
    smem = getattr(props, "shared_memory_per_block_optin", 0) or SHARED_MEMORY.get(props.major * 10 + props.minor,
                                                                                     48 * KIB)
    return Target(props.major * 10 + props.minor, int(smem), props.multi_processor_count)


def tile_capability(target: Target) -> int:
    """The known capability whose tiles ``target`` uses: the nearest known one at or below ``target.cc`` (the
    oldest known one for anything older), or, when ``target.smem`` is less than that one's shared memory, the
    newest known one below it that fits (the oldest known one if none does)."""
    known = sorted(SHARED_MEMORY)
    base = max([cc for cc in known if cc <= target.cc], default=known[0])
    if SHARED_MEMORY[base] <= target.smem:
        return base
    return max([cc for cc in known if cc <= base and SHARED_MEMORY[cc] <= target.smem], default=known[0])


# Per known capability, (block_n, block_v, block_e, num_warps) of the LM-head kernels, by role and input dtype
# ("half": bf16/fp16 dots on tensor cores; "fp32": IEEE dots on CUDA cores, whose operands take more registers:
# narrower K-steps).  "logits_*": the given-logits kernels (mlm_loss): no dot, the tiles stream the [N, V] logits
# (block_e unused); row-stride loads of V-wide rows (V = 30522 is no multiple of 16) are not vectorised, so they
# stay small.  "stages": the software-pipelining depth of the dot loops.
_HOPPER = {"fwd_half": (64, 128, 64, 8), "fwd_fp32": (64, 64, 16, 8), "bwd_half": (128, 128, 32, 8),
           "bwd_fp32": (64, 128, 16, 8), "logits_fwd": (8, 256, 16, 4), "logits_bwd": (16, 256, 16, 8), "stages": 3}
_AMPERE = dict(_HOPPER, bwd_half=(128, 128, 16, 8), logits_fwd=(8, 256, 16, 8))  # mma.sync: 8 warps, narrower K
TILES = {
    90: _HOPPER,
    89: dict(_AMPERE, fwd_fp32=(64, 32, 16, 8)),
    86: dict(_AMPERE, fwd_fp32=(64, 32, 16, 8)),
    80: _AMPERE,
    # Turing: no cp.async pipelining, no bf16, and Triton gives fp16 dots no tensor cores (FMA dots): small tiles
    75: dict(_AMPERE, fwd_half=(64, 64, 32, 8), fwd_fp32=(64, 32, 16, 8), bwd_half=(64, 64, 16, 8),
             bwd_fp32=(64, 64, 16, 8), stages=2),
}
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


def gpu_tiles(target: Target, dtype: torch.dtype, logits: bool = False) -> tuple[tuple, tuple, int]:
    """``(forward, backward, num_stages)`` tiles (``(block_n, block_v, block_e, num_warps)`` each) for ``target``."""
    tiles = TILES[tile_capability(target)]
    kind = "fp32" if dtype == torch.float32 else "half"
    if logits:
        return tiles["logits_fwd"], tiles["logits_bwd"], tiles["stages"]
    return tiles[f"fwd_{kind}"], tiles[f"bwd_{kind}"], tiles["stages"]


def head_config(n_rows: int, vocab_size: int, width: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32, block_n: int | None = None, block_v: int | None = None,
                block_e: int | None = None, splits: int | None = None, logits: bool = False,
                target: Target | None = None) -> HeadConfig:
    """Tiles of the LM-head kernels for ``[n_rows, width] @ [vocab_size, width]ᵀ`` in ``dtype``.

    ``target``: the GPU (None: ``Target.of(device)`` for a CUDA device, else Hopper, ``Target.known(90)``); under
    the interpreter the interpreter's tiles.  The forward pass splits the vocabulary over ``splits`` programs per
    row block so that small-N shapes still fill the GPU; the partial (max, sum-exp, gold, best) rows are merged by
    a tiny combine kernel.  Explicit ``block_*`` arguments set the tiles of the forward and backward kernels alike
    (tests use them to prove that samples do not depend on tiling).  ``logits=True``: the tiles of the
    given-logits variants (``mlm_loss``), which stream ``[N, V]`` logits instead of forming them by ``tl.dot``.
    """
    stages = 3
    if interpreting() and target is None:
        forward, backward, row_tile = _INTERPRETER, _INTERPRETER, _INTERPRETER_ROW_TILE
        target_programs = 2
    else:
        if target is None:
            target = Target.of(device) if device is not None and device.type == "cuda" else Target.known(90)
        forward, backward, stages = gpu_tiles(target, dtype, logits)
        row_tile = _ROW_TILE
        target_programs = 2 * target.sms
    forward = [given or default for given, default in zip((block_n, block_v, block_e), forward)] + [forward[3]]
    backward = [given or default for given, default in zip((block_n, block_v, block_e), backward)] + [backward[3]]
    bn, bv, be, warps = forward
    if bv % 4:
        raise ValueError(f"block_v: expected a multiple of 4 (one Philox call serves 4 vocabulary ids), got {bv}")
    row_blocks = -(-max(n_rows, 1) // bn)
    vocab_blocks = -(-max(vocab_size, 1) // bv)
    if splits is None:
        splits = max(1, min(vocab_blocks, -(-target_programs // row_blocks)))
    return HeadConfig(bn, bv, _fit_width(be, width), splits, num_warps=warps, num_stages=stages,
                      bwd_block_n=backward[0], bwd_block_v=backward[1], bwd_block_e=_fit_width(backward[2], width),
                      bwd_num_warps=backward[3], bwd_group_n=_BWD_GROUP_N,
                      row_block_n=row_tile[0], row_block_e=row_tile[1])


GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def device_refusal(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on ``device``, or None: CUDA, or any device under the interpreter."""
    if device.type != "cuda" and not interpreting():
        return f"the Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for tests on CPU), got {device}"
    return None


def gpu_refusal(target: Target, dtype: torch.dtype) -> str | None:
    """Why the kernels cannot compute ``dtype`` on the GPU ``target``, or None: compute capability 7.5 or newer
    (what Triton compiles for), bfloat16 on 8.0 or newer."""
    if target.cc < MIN_CAPABILITY:
        return (f"the Triton kernels need a GPU of compute capability {MIN_CAPABILITY // 10}.{MIN_CAPABILITY % 10} "
                f"or newer (what Triton compiles for), this one is sm_{target.cc}; use backend='torch'")
    if dtype == torch.bfloat16 and target.cc < BF16_CAPABILITY:
        return (f"bfloat16 needs a GPU of compute capability 8.0 or newer (Ampere), this one is sm_{target.cc}; "
                "pass float16 or float32 tensors, or use backend='torch'")
    return None


def refusal(device: torch.device, dtype: torch.dtype, target: Target | None = None) -> str | None:
    """Why the Triton kernels cannot compute ``dtype`` tensors on ``device``, or None when they can.

    On a GPU (``target``, None: ``Target.of(device)``) float32 and float16 from compute capability 7.5, bfloat16
    from 8.0 (``gpu_refusal``); never float64.  Under the interpreter (``TRITON_INTERPRET=1``) float32 only: its
    bfloat16 ``tl.dot`` returns garbage (triton-lang/triton#11584).  Integer dtypes (index tensors) are judged by
    their device alone.
    """
    reason = device_refusal(device)
    if reason is not None or not dtype.is_floating_point:
        return reason
    if interpreting() and target is None:
        if dtype != torch.float32:
            return (f"the Triton interpreter (TRITON_INTERPRET=1) computes float32 only, not {dtype} (its bfloat16 "
                    "tl.dot is broken upstream, triton-lang/triton#11584); pass float32 tensors or use backend='torch'")
        return None
    if dtype not in GPU_DTYPES:
        return (f"the Triton kernels compute float32, bfloat16 and float16, not {dtype}; use backend='torch' "
                "(or TNOPS_BACKEND=torch)")
    return gpu_refusal(target if target is not None else Target.of(device), dtype)


def check_inputs(**tensors: torch.Tensor | None) -> None:
    """Refuse, before any kernel runs, tensors the Triton kernels cannot compute with (``refusal``; None
    entries are skipped), and tensors on two devices.

    Raises:
        ValueError: a tensor on a device the kernels cannot reach (``device_refusal``), or on another device than
            the first tensor's (named both).
        TypeError: a float dtype they cannot compute there.
    """
    first = None
    for name, value in tensors.items():
        if value is None:
            continue
        if first is not None and value.device != first[1].device:
            raise ValueError(f"{name}: expected a tensor on {first[1].device} (where {first[0]} is), got one on "
                             f"{value.device}; the Triton kernels run on one device")
        first = first or (name, value)
        reason = device_refusal(value.device)
        if reason is not None:
            raise ValueError(f"{name}: {reason}")
        reason = refusal(value.device, value.dtype)
        if reason is not None:
            raise TypeError(f"{name}: {reason}")


def device_guard(device: torch.device):
    """The context every launch runs in: ``torch.cuda.device(device)`` for a CUDA device, so a kernel of tensors on
    ``cuda:1`` launches on ``cuda:1`` (Triton launches on the *current* device, with its current stream) while
    ``cuda:0`` is current; nothing for other devices (the interpreter)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def on_inputs_device(launcher):
    """Run ``launcher(first, ...)`` under ``device_guard(first.device)`` (its first argument's device)."""
    @functools.wraps(launcher)
    def run(first, *args, **kwargs):
        with device_guard(first.device):
            return launcher(first, *args, **kwargs)
    return run
