"""The one loader of the native extension (``csrc/``): everything that uses a C++ op asks ``load()`` first.

The native backend (``tnops/backends/native.py``), the C++ Gumbel noise of ``tnops.random.native_gumbel`` and the
fake kernels all go through here, so ``TNOPS_NATIVE`` means the same for each of them:

* ``auto`` (default): the installed ``tnops._native`` (``pip install`` builds it), else a JIT build on first use;
* ``jit``: always the JIT build into ``$TNOPS_NATIVE_CACHE`` (default ``~/.cache/tnops/native``); the installed
  library is never imported, since two libraries defining ``TORCH_LIBRARY(tnops)`` abort the process;
* ``off``: never; the torch backend serves CPU tensors and the torch ops make the Gumbel noise.

The result is decided once per process.  A failure (no compiler, a stale build) is remembered with its reason,
which the backend registry shows, and warned about once.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parents[1] / "csrc"
MODES = ("auto", "jit", "off")
OPS = ("mlm_head_native", "mlm_head_native_backward", "mlm_shard_stats_native", "gumbel_noise")
_STATE: dict = {}


def cache_dir() -> Path:
    return Path(os.environ.get("TNOPS_NATIVE_CACHE", Path.home() / ".cache" / "tnops" / "native"))


def mode() -> str:
    return os.environ.get("TNOPS_NATIVE", "auto").strip().lower()


def load() -> str | None:
    """Load (or JIT-build) the extension once; None when ``torch.ops.tnops.*`` are there, else why they are not."""
    if "reason" not in _STATE:
        _STATE["reason"] = _load(mode())
        if _STATE["reason"] is None:
            _register_fakes()
        elif mode() != "off":
            warnings.warn(f"tnops: the native CPU backend is unavailable, the torch backend serves CPU tensors "
                          f"({_STATE['reason']})", RuntimeWarning, stacklevel=3)
    return _STATE["reason"]


def _load(how: str) -> str | None:
    if how not in MODES:
        return f"TNOPS_NATIVE={how!r}: expected auto, jit or off"
    if how == "off":
        return "TNOPS_NATIVE=off"
    if how == "jit" or not _import_installed():
        try:
            _jit_build()
        except Exception as error:  # no compiler, no ninja, a compile error: the reason is shown to users
            return f"the native extension could not be built: {type(error).__name__}: {error}"
    missing = [op for op in OPS if not hasattr(torch.ops.tnops, op)]
    if missing:
        return f"the loaded native extension does not register tnops::{', '.join(missing)} (a stale build?)"
    return None


def _import_installed() -> bool:
    try:
        import tnops._native  # noqa: F401  (registers torch.ops.tnops.*)
    except (ImportError, OSError):
        return False
    return True


def _jit_build() -> None:
    """Compile csrc/ into the cache directory with torch's ninja-based JIT loader (registers the ops)."""
    from torch.utils.cpp_extension import load as load_cpp

    sources = sorted(str(p) for p in CSRC.glob("*.cpp"))
    if not sources:
        raise ImportError(f"no C++ sources under {CSRC} (an installed wheel without the extension)")
    build_dir = cache_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    print(f"tnops: building the native CPU extension into {build_dir} (first use; ~1-2 min)", file=sys.stderr)
    load_cpp(name="tnops_native_jit", sources=sources, build_directory=str(build_dir),
             extra_cflags=["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"],
             extra_ldflags=["-fopenmp"], verbose=False)


def _register_fakes() -> None:
    """Shapes-only kernels of the C++ ops, so torch.compile and meta tensors can trace them."""
    from tnops.losses import compute_dtype

    @torch.library.register_fake("tnops::mlm_head_native")
    def _(inputs, weight, bias, labels, row_ids, offsets, syn_ids, seed, sample, temperature, disallow_correct,
          ignore_index, want_inputs, want_weight, want_bias, chunk_rows, coef_a, coef_b, coef_c, coef_d):
        n = labels.shape[0]
        rows = [inputs.new_empty((n,), dtype=compute_dtype(inputs.dtype)) for _ in range(3)]  # nll, lse, zmean
        grads = [torch.empty_like(t) if w and t is not None else inputs.new_empty((0,))
                 for t, w in zip((inputs, weight, bias), (want_inputs, want_weight, want_bias))]
        return (*rows, labels.new_empty((n,)), labels.new_empty((n,), dtype=torch.bool), *grads)

    @torch.library.register_fake("tnops::mlm_head_native_backward")
    def _(inputs, weight, bias, labels, lse, coef, want_inputs, want_weight, want_bias, chunk_rows, shard_other=None,
          vocab_start=0, vocab_all=0):
        return tuple(torch.empty_like(t) if w and t is not None else inputs.new_empty((0,))
                     for t, w in zip((inputs, weight, bias), (want_inputs, want_weight, want_bias)))

    @torch.library.register_fake("tnops::mlm_shard_stats_native")
    def _(inputs, weight, bias, labels, row_ids, seed, sample, temperature, disallow_correct, ignore_index,
          vocab_start, vocab_all, chunk_rows):
        n = labels.shape[0]
        return inputs.new_empty((5, n), dtype=compute_dtype(inputs.dtype)), labels.new_empty((n,))

    @torch.library.register_fake("tnops::gumbel_noise")
    def _(seed, rows, start, stop):
        return rows.new_empty((rows.shape[0], stop - start), dtype=torch.float32)
