"""The ``native`` backend: the fused C++/OpenMP head of ``csrc/`` for CPU tensors, behind the row contract.

The extension ``tnops._native`` is built by ``pip install`` (setup.py; ``TNOPS_SKIP_NATIVE=1`` skips it).
When it is missing, the first use builds it with ninja into ``$TNOPS_NATIVE_CACHE`` (default
``~/.cache/tnops/native``), saying so on stderr; when that fails too (no compiler), the backend is unavailable
with the build's error as the reason, and CPU calls fall back to the ``torch`` backend with one warning.
SR uses the shared ``tnops.losses`` maths (O(M·E), nothing to fuse).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch

from tnops import backends, losses
from tnops.backends import torch_chunked
from tnops.options import MLMOptions
from tnops.outputs import MLMRows
from tnops.synonyms.csr import CSRView

NAME = "native"
FUSES_GRADIENTS = True
CSRC = Path(__file__).resolve().parents[2] / "csrc"
_STATE: dict = {}


def _cache_dir() -> Path:
    return Path(os.environ.get("TNOPS_NATIVE_CACHE", Path.home() / ".cache" / "tnops" / "native"))


def _jit_build() -> None:
    """Compile csrc/ into the cache directory with torch's ninja-based JIT loader (registers the ops)."""
    from torch.utils.cpp_extension import load

    sources = sorted(str(p) for p in CSRC.glob("*.cpp"))
    if not sources:
        raise ImportError(f"no C++ sources under {CSRC} (an installed wheel without the extension)")
    build_dir = _cache_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    print(f"tnops: building the native CPU extension into {build_dir} (first use; ~1-2 min)", file=sys.stderr)
    load(name="tnops_native_jit", sources=sources, build_directory=str(build_dir),
         extra_cflags=["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"],
         extra_ldflags=["-fopenmp"],
         verbose=False)


def load_extension() -> str | None:
    """Import (or JIT-build) the extension once; returns None on success, else why it is unavailable.

    ``TNOPS_NATIVE``: ``auto`` (default: the installed extension, else a JIT build on first use), ``jit`` (always
    the JIT build, ignoring an installed one), ``off`` (never: the torch backend serves CPU tensors).
    """
    if "reason" not in _STATE:
        mode = os.environ.get("TNOPS_NATIVE", "auto").strip().lower()
        reason = None
        if mode not in ("auto", "jit", "off"):
            reason = f"TNOPS_NATIVE={mode!r}: expected auto, jit or off"
        elif mode == "off":
            reason = "TNOPS_NATIVE=off"
        elif mode == "jit" or not _importable():
            try:
                _jit_build()
            except Exception as error:  # no compiler, no ninja, a compile error: the reason is shown to users
                reason = f"the native extension could not be built: {type(error).__name__}: {error}"
        if reason is None and not hasattr(torch.ops.tnops, "mlm_head_native"):
            reason = "the loaded native extension does not register tnops::mlm_head_native (a stale build?)"
        _STATE["reason"] = reason
        if reason is not None and mode != "off":
            warnings.warn(f"tnops: the native CPU backend is unavailable, the torch backend serves CPU tensors "
                          f"({reason})", RuntimeWarning, stacklevel=3)
    return _STATE["reason"]


def _importable() -> bool:
    try:
        import tnops._native  # noqa: F401  (registers torch.ops.tnops.*)
    except (ImportError, OSError):
        return False
    return True


def unavailable() -> str | None:
    return load_extension()


def refuses(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return f"the native backend computes CPU tensors, not {device.type} ones"
    return None


def _chunk_rows(vocab: int) -> int:
    return backends.chunk_rows(vocab, backends.NATIVE_CHUNK_ELEMENTS)


def mlm_forward(inputs, weight, bias, labels, row_ids, table: CSRView | None, sr_embedding, options: MLMOptions,
                want_grads) -> MLMRows:
    vocab = inputs.shape[1] if weight is None else weight.shape[0]
    seed = options.seed or 0
    ce, lse, predictions, corrected, d_in, d_w, d_b = torch.ops.tnops.mlm_head_native(
        inputs, weight, bias, labels, row_ids, None if table is None else table.offsets,
        None if table is None else table.ids, seed - 2**64 if seed >= 2**63 else seed, options.prediction == "sample",
        options.temperature, options.disallow_correct, options.ignore_index, *want_grads, _chunk_rows(vocab))
    sr = None
    if sr_embedding is not None:
        sr = losses.sr_rows(sr_embedding, labels, predictions, labels != options.ignore_index)
    grads = None
    if any(want_grads):
        grads = tuple(g if w else None for g, w in zip((d_in, d_w, d_b), want_grads))
    return MLMRows(ce, lse, predictions, corrected, sr, None, grads)


def mlm_backward(inputs, weight, bias, labels, lse, ce_coef, sr_embedding, predictions, sr_coef, sr_aux,
                 options: MLMOptions, want):
    grads = [None, None, None]
    if any(want[:3]):
        vocab = inputs.shape[1] if weight is None else weight.shape[0]
        out = torch.ops.tnops.mlm_head_native_backward(inputs, weight, bias, labels, lse, ce_coef, *want[:3],
                                                       _chunk_rows(vocab))
        grads = [g if w else None for g, w in zip(out, want[:3])]
    d_sr = torch_chunked.sr_backward(sr_embedding, labels, predictions, sr_coef, options) if want[3] else None
    return (*grads, d_sr)


def _register_fakes() -> None:
    if _STATE.get("fakes") or not hasattr(torch.ops.tnops, "mlm_head_native"):
        return

    @torch.library.register_fake("tnops::mlm_head_native")
    def _(inputs, weight, bias, labels, row_ids, offsets, syn_ids, seed, sample, temperature, disallow_correct,
          ignore_index, want_inputs, want_weight, want_bias, chunk_rows):
        n = labels.shape[0]
        rows = inputs.new_empty((n,), dtype=losses.compute_dtype(inputs.dtype))
        grads = [torch.empty_like(t) if w and t is not None else inputs.new_empty((0,))
                 for t, w in zip((inputs, weight, bias), (want_inputs, want_weight, want_bias))]
        return (rows, rows.clone(), labels.new_empty((n,)), labels.new_empty((n,), dtype=torch.bool), *grads)

    @torch.library.register_fake("tnops::mlm_head_native_backward")
    def _(inputs, weight, bias, labels, lse, coef, want_inputs, want_weight, want_bias, chunk_rows):
        return tuple(torch.empty_like(t) if w and t is not None else inputs.new_empty((0,))
                     for t, w in zip((inputs, weight, bias), (want_inputs, want_weight, want_bias)))

    @torch.library.register_fake("tnops::gumbel_noise")
    def _(seed, rows, start, stop):
        return rows.new_empty((rows.shape[0], stop - start), dtype=torch.float32)

    _STATE["fakes"] = True


if load_extension() is None:
    _register_fakes()
