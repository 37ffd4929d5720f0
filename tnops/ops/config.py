"""Launch configuration of the Triton kernels: the one place block sizes and warps are chosen."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tnops.backends import interpreting


@dataclass(frozen=True)
class HeadConfig:
    block_n: int
    block_v: int
    block_e: int
    splits: int
    num_warps: int
    num_stages: int


def head_config(n_rows: int, vocab_size: int, width: int, device: torch.device | None = None,
                block_n: int | None = None, block_v: int | None = None, block_e: int | None = None,
                splits: int | None = None) -> HeadConfig:
    """Tiles of the LM-head kernels for ``[n_rows, width] @ [vocab_size, width]ᵀ``.

    The forward pass splits the vocabulary over ``splits`` programs per row block so that small-N shapes
    still fill the GPU; the partial (max, sum-exp, gold, best) rows are merged by a tiny combine kernel.
    Explicit arguments override the heuristic (tests use this to prove samples do not depend on tiling).
    """
    if interpreting():
        # numpy executes each program: few, large tiles are fastest
        bn, bv, be = 32, 256, 64
        target_programs = 2
    else:
        bn, bv = 64, 128
        be = 64 if width >= 64 else max(16, 1 << (max(width, 1) - 1).bit_length())
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device is not None and \
            device.type == "cuda" else 132
        target_programs = 2 * sms
    bn, bv, be = block_n or bn, block_v or bv, block_e or be
    if bv % 4:
        raise ValueError(f"block_v: expected a multiple of 4 (one Philox call serves 4 vocabulary ids), got {bv}")
    row_blocks = -(-max(n_rows, 1) // bn)
    vocab_blocks = -(-max(vocab_size, 1) // bv)
    if splits is None:
        splits = max(1, min(vocab_blocks, -(-target_programs // row_blocks)))
    return HeadConfig(bn, bv, be, splits, num_warps=4 if bn * bv <= 64 * 64 else 8, num_stages=3)
