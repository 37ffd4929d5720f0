"""Which implementation serves which call, and every setting tnops reads from the environment.

``TNOPS_BACKEND``     force a backend: ``reference`` | ``torch`` | ``triton`` | ``native`` (default: by device)
``TNOPS_CHUNK_ROWS``  rows per chunk of the memory-bounded torch path (default: ~4 Mi logits per chunk)
"""
from __future__ import annotations

import os

import torch

BACKENDS = ("reference", "torch", "triton", "native")
CHUNK_ELEMENTS = 1 << 22


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends() -> set[str]:
    """Backends whose implementation exists in this installation."""
    names = {"reference", "torch"}
    if triton_available():
        names.add("triton")
    return names


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


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
    available = available_backends()
    if name is None:
        return "triton" if device.type == "cuda" and "triton" in available else "torch"
    if name not in available:
        raise ValueError(f"TNOPS_BACKEND={name!r} is not available in this installation of tnops "
                         f"(available: {', '.join(sorted(available))})")
    if name == "triton" and device.type != "cuda" and not interpreting():
        raise ValueError(f"TNOPS_BACKEND='triton' needs CUDA tensors (got {device}) or TRITON_INTERPRET=1")
    return name


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so one chunk of logits holds about ``CHUNK_ELEMENTS`` values (``TNOPS_CHUNK_ROWS`` overrides)."""
    env = os.environ.get("TNOPS_CHUNK_ROWS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"TNOPS_CHUNK_ROWS={env!r}: expected a positive integer")
        return int(env)
    return max(1, CHUNK_ELEMENTS // max(vocab_size, 1))
