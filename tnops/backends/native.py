"""The ``native`` backend: the fused C++/OpenMP head of ``csrc/`` for CPU tensors, behind the row contract.

The extension is loaded by ``tnops._native_loader`` (the one loader, shared with ``tnops.random``'s C++ Gumbel
noise): ``pip install`` builds ``tnops._native`` (setup.py; ``TNOPS_SKIP_NATIVE=1`` skips it); when it is missing,
the first use builds it with ninja into ``$TNOPS_NATIVE_CACHE`` (default ``~/.cache/tnops/native``), saying so on
stderr; when that fails too (no compiler), the backend is unavailable with the build's error as the reason, and
CPU calls fall back to the ``torch`` backend with one warning.  ``TNOPS_NATIVE=auto|jit|off`` picks the source.
SR uses the shared ``tnops.losses`` maths (O(M·E), nothing to fuse).
"""
from __future__ import annotations

import torch

from tnops import _native_loader, backends, losses
from tnops.backends import torch_chunked
from tnops.options import MLMOptions
from tnops.outputs import MLMRows
from tnops.synonyms.csr import CSRView

NAME = "native"
FUSES_GRADIENTS = True


def load_extension() -> str | None:
    """Load (or JIT-build) the extension once (``tnops._native_loader.load``): None, or why it is unavailable."""
    return _native_loader.load()


def unavailable() -> str | None:
    return load_extension()


def refuses(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return f"the native backend computes CPU tensors, not {device.type} ones"
    return None


def chunk_rows(vocab: int) -> int:
    """Rows per chunk of the native kernels for a head of ``vocab`` rows."""
    return backends.chunk_rows(vocab, backends.NATIVE_CHUNK_ELEMENTS, backends.NATIVE_MIN_CHUNK_ROWS)


def aux_rows(has_sr: bool) -> int:
    return 0


rtd_rows = losses.rtd_rows


def mlm_forward(inputs, weight, bias, labels, row_ids, table: CSRView | None, sr_embedding, options: MLMOptions,
                want_grads, coefficients) -> MLMRows:
    """Per-row nll, lse, zmean, predictions, corrected (+ SR); with ``want_grads``, the gradients of ``Σ_kept f_r``,
    ``df_r/dz_r = (a + b·lse_r)·softmax(z_r) - c·onehot(gold_r) - d/V`` for ``coefficients = (a, b, c, d)``."""
    vocab = inputs.shape[1] if weight is None else weight.shape[0]
    seed = options.seed or 0
    a, b, c, d = (float(x) for x in coefficients)
    nll, lse, zmean, predictions, corrected, d_in, d_w, d_b = torch.ops.tnops.mlm_head_native(
        inputs, weight, bias, labels, row_ids, None if table is None else table.offsets,
        None if table is None else table.ids, seed - 2**64 if seed >= 2**63 else seed, options.prediction == "sample",
        options.temperature, options.disallow_correct, options.ignore_index, *want_grads, chunk_rows(vocab),
        a, b, c, d)
    sr = None
    if sr_embedding is not None:
        sr = losses.sr_rows(sr_embedding, labels, predictions, labels != options.ignore_index)
    grads = None
    if any(want_grads):
        grads = tuple(g if w else None for g, w in zip((d_in, d_w, d_b), want_grads))
    return MLMRows(nll, lse, zmean, predictions, corrected, sr, None, grads)


def mlm_backward(inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux,
                 options: MLMOptions, want):
    """Gradients of ``Σ_r f_r + Σ sr_coef·sr`` with ``df_r/dz_r = α_r·softmax - γ_r·onehot(gold_r) - δ_r/V``,
    ``(α, γ, δ) = coef[:, r]`` (``coef`` [3, N]; rows whose three coefficients are 0 cost no work)."""
    grads = [None, None, None]
    if any(want[:3]):
        vocab = inputs.shape[1] if weight is None else weight.shape[0]
        out = torch.ops.tnops.mlm_head_native_backward(inputs, weight, bias, labels, lse, coef, *want[:3],
                                                       chunk_rows(vocab))
        grads = [g if w else None for g, w in zip(out, want[:3])]
    d_sr = torch_chunked.sr_backward(sr_embedding, labels, predictions, sr_coef, options) if want[3] else None
    return (*grads, d_sr)
