"""Which implementation serves which call, and every setting tnops reads from the environment.

``TNOPS_BACKEND``     force a backend: ``reference`` | ``torch`` | ``triton`` | ``native`` (default: by device)
``TNOPS_CHUNK_ROWS``  rows per chunk of the memory-bounded torch path (default: ~4 Mi logits per chunk)
"""
from __future__ import annotations

import os

import torch

BACKENDS = ("reference", "torch", "triton", "native")
# Backends whose implementation exists in this build; the others are refused with a clear error.
AVAILABLE = {"reference", "torch"}
CHUNK_ELEMENTS = 1 << 22


def requested_backend() -> str | None:
    """The backend named by ``TNOPS_BACKEND``, or None.  Raises ValueError for an unknown name."""
    name = os.environ.get("TNOPS_BACKEND", "").strip().lower()
    if not name:
        return None
    if name not in BACKENDS:
        raise ValueError(f"TNOPS_BACKEND={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def select_backend(device: torch.device) -> str:
    """The backend for tensors on ``device``: ``TNOPS_BACKEND`` if set, else the fastest available one."""
    name = requested_backend()
    if name is None:
        return "torch"
    if name not in AVAILABLE:
        raise ValueError(f"TNOPS_BACKEND={name!r} is not available in this build of tnops "
                         f"(available: {', '.join(sorted(AVAILABLE))})")
    return name


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so one chunk of logits holds about ``CHUNK_ELEMENTS`` values (``TNOPS_CHUNK_ROWS`` overrides)."""
    env = os.environ.get("TNOPS_CHUNK_ROWS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"TNOPS_CHUNK_ROWS={env!r}: expected a positive integer")
        return int(env)
    return max(1, CHUNK_ELEMENTS // max(vocab_size, 1))
