"""The backend registry: which implementation serves which call, and every setting read from the environment.

A backend is one module implementing ``tnops.backends.contract.Backend`` (a ``typing.Protocol``; README, "How a
backend plugs in"): ``NAME``, ``FUSES_GRADIENTS``, ``unavailable()``, ``refuses(device, dtype)``,
``aux_rows(has_sr)``, ``mlm_forward(...) -> MLMRows`` (per-row statistics), ``mlm_backward(...)`` (per-row
coefficients to gradients) and ``rtd_rows(...)``.  The registry checks each module against the protocol when it
loads it (``contract.problems``).

Adding one is one module and one line in ``_MODULES``.  ``functional`` never names a backend: it asks
``select`` and calls the ``tnops::`` custom ops (``tnops/_ops.py``), which call the module.

Environment:
``TNOPS_BACKEND``     force a backend by name (default: by device: CUDA → triton, falling back to torch where the Triton
                      path cannot run on the GPU; CPU → native if built, else torch)
``TNOPS_CHUNK_ROWS``  rows per chunk of the chunked CPU/torch paths (default: ~4 Mi logits per chunk; native ~16 Mi)
``TNOPS_NATIVE``      ``auto`` | ``jit`` | ``off``: the installed native extension, else JIT-built (native.py)
``TNOPS_NATIVE_CACHE`` where the JIT build goes (default ``~/.cache/tnops/native``)
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

from tnops.backends import contract

_MODULES = {
    "reference": "tnops.backends.reference",
    "torch": "tnops.backends.torch_chunked",
    "triton": "tnops.backends.triton",
    "native": "tnops.backends.native",
}
# Preferred order per device type when no backend is requested.
_DEFAULTS = {"cuda": ("triton", "torch"), "cpu": ("native", "torch")}
# What the default dispatch hands out for a preferred backend: "triton-or-torch" is the triton backend that falls back
# to the torch backend, with one warning, when the Triton path cannot run on the GPU (triton_fallback.py); a backend
# named by backend= or TNOPS_BACKEND raises instead.  Not in names(); may be named.
_DEFAULT_FLAVOURS = {"triton": "triton-or-torch"}
_HIDDEN = {"triton-or-torch": "tnops.backends.triton_fallback"}
_warned: set[str] = set()
CHUNK_ELEMENTS = 1 << 22         # the torch backend's chunk: 16 MB of fp32 logits
NATIVE_CHUNK_ELEMENTS = 1 << 24  # the native backend's: 64 MB, as its GEMMs gain from taller chunks
# ...and never fewer rows than this: each chunk's GEMMs re-read (and pack) all of W and read-modify-write all of dW,
# so at XLM-R's V = 250,002 the 67-row chunks of 64 MB cost ~1.7x the GEMM time of 256-row ones.  The logits
# buffer is then 256·V floats (256 MB at V = 250,002: dW's own size at E = 256).
NATIVE_MIN_CHUNK_ROWS = 256
_loaded: dict[str, ModuleType | str] = {}


def names() -> tuple[str, ...]:
    """Every registered backend name, available here or not."""
    return tuple(_MODULES)


def _load(name: str) -> ModuleType | str:
    """The backend's module, or the reason it cannot be used (its import error or its own ``unavailable()``)."""
    if name not in _loaded:
        try:
            module = importlib.import_module(_MODULES.get(name) or _HIDDEN[name])
            reason = contract.problems(module)
            if reason is not None:
                reason = f"module {module.__name__} {reason}"
            else:
                reason = module.unavailable()
        except ImportError as error:  # e.g. triton not installed, the native build failed
            module, reason = None, f"{type(error).__name__}: {error}"
        _loaded[name] = module if reason is None else reason
    return _loaded[name]


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run in this installation, or None when it can."""
    if name not in _MODULES and name not in _HIDDEN:
        raise ValueError(f"backend: expected one of {', '.join(_MODULES)}, got {name!r}")
    loaded = _load(name)
    return loaded if isinstance(loaded, str) else None


def available_backends() -> list[str]:
    """Names of the backends that can run in this installation."""
    return [name for name in _MODULES if unavailable_reason(name) is None]


def get(name: str) -> ModuleType:
    """The module of an available backend (ValueError with the reason otherwise)."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise ValueError(f"backend {name!r} is not available in this installation: {reason}")
    return _loaded[name]


def requested_backend() -> str | None:
    """The backend named by ``TNOPS_BACKEND``, or None.  Raises ValueError for an unknown name."""
    name = os.environ.get("TNOPS_BACKEND", "").strip().lower()
    if not name:
        return None
    if name not in _MODULES and name not in _HIDDEN:
        raise ValueError(f"TNOPS_BACKEND={name!r}: expected one of {', '.join(_MODULES)}")
    return name


@torch.compiler.assume_constant_result  # host-side choice: dynamo runs it once per graph instead of tracing imports
def select(device: torch.device, dtype: torch.dtype, backend: str | None = None) -> str:
    """The backend for tensors of ``device`` and ``dtype``: ``backend`` if given, else ``TNOPS_BACKEND``, else the
    first available default of the device type.  A named backend that cannot serve raises ValueError saying why.

    The default on CUDA is ``"triton-or-torch"`` (``_DEFAULT_FLAVOURS``): the Triton kernels, with the torch backend
    where they cannot run (launch failures, ``triton_fallback.py``); a GPU they refuse outright (compute capability
    < 7.5, bfloat16 before 8.0) gets the torch backend here, with one warning naming the reason.
    """
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend: expected a str or None, got {type(backend).__name__}")
    name = backend.strip().lower() if backend is not None else requested_backend()
    if name is None:
        for candidate in _DEFAULTS.get(device.type, ("torch",)):
            if candidate not in _MODULES or unavailable_reason(candidate) is not None:
                continue
            flavour = _DEFAULT_FLAVOURS.get(candidate, candidate)
            if unavailable_reason(flavour) is not None:
                flavour = candidate
            if get(candidate).refuses(device, dtype) is None:
                return flavour
            hardware = getattr(get(flavour), "hardware_refusal", None)
            reason = hardware(device, dtype) if hardware is not None else None
            if reason is not None:
                _warn_once(f"tnops: the {candidate} backend cannot serve {dtype} tensors on {device} ({reason}); "
                           f"the next default backend computes them")
        name = "torch"
    source = "backend" if backend is not None else "TNOPS_BACKEND"
    if name not in _MODULES and name not in _HIDDEN:
        raise ValueError(f"{source}: expected one of {', '.join(_MODULES)}, got {name!r}")
    reason = unavailable_reason(name) or get(name).refuses(device, dtype)
    if reason is not None:
        raise ValueError(f"{source}={name!r} cannot serve {dtype} tensors on {device}: {reason}")
    return name


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def chunk_rows(vocab_size: int, elements: int = CHUNK_ELEMENTS, min_rows: int = 1) -> int:
    """Rows per chunk so one chunk of logits holds about ``elements`` values, at least ``min_rows``
    (``TNOPS_CHUNK_ROWS`` overrides both)."""
    env = os.environ.get("TNOPS_CHUNK_ROWS", "").strip()
    largest = 2**31 - 1
    if env:
        # ASCII digits only: str.isdigit() also accepts "²" or "١", which int() then refuses or reads as another
        # number; and a bound, since the row count reaches the kernels as a C int64 (10**30 overflows it).
        if (not (env.isascii() and env.isdigit()) or len(env.lstrip("0")) > len(str(largest))
                or not 1 <= int(env) <= largest):  # the length first: int() refuses over 4300 digits
            raise ValueError(f"TNOPS_CHUNK_ROWS={env!r}: expected a positive integer (ASCII digits) in "
                             f"[1, {largest}]")
        return int(env)
    return max(1, min_rows, elements // max(vocab_size, 1))
