"""The ``triton`` backend: the fused Triton kernels of ``tnops/ops`` behind the row-level contract.

CUDA tensors in float32, bfloat16 and float16 (and, for tests, CPU float32 under ``TRITON_INTERPRET=1``).
The forward kernels compute the per-row statistics (NLL, log-sum-exp, mean logit), the prediction, hard
correction and SR in one pass over vocabulary tiles; the backward turns per-row coefficients (α, γ, δ) into
gradients, recomputing the logits tile by tile (no ``[N, V]`` tensor anywhere).
``mlm_loss`` (logits already made, ``weight=None``) runs the same kernels reading the given logits tile by tile;
its backward writes ``d_logits`` directly.
"""
from __future__ import annotations

import torch

from tnops.ops.config import refusal  # imports no Triton: the registry calls unavailable() without it
from tnops.options import MLMOptions
from tnops.outputs import MLMRows
from tnops.synonyms.csr import CSRView

NAME = "triton"
FUSES_GRADIENTS = False
sr_aux_rows = 4  # with SR: the forward's (a·b, |a|², |b|²) for the SR backward, then 1 - p(gold) (AUX_COMPLEMENT)
AUX_COMPLEMENT = -1  # the row of sr_aux holding 1 - p(gold), the CE backward's exact gold entry
def aux_rows(has_sr: bool) -> int:
    """Rows of the ``sr_aux`` that ``mlm_forward`` returns (the fake kernel must allocate as many)."""
    return sr_aux_rows if has_sr else 1  # without SR: the 1 - p(gold) row alone


def unavailable() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"triton is not installed ({error})"
    return None


def refuses(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the kernels cannot compute these tensors (``tnops.ops.config.refusal``, which the launchers check too)."""
    return refusal(device, dtype)


def mlm_forward(inputs, weight, bias, labels, row_ids, table: CSRView | None, sr_embedding, options: MLMOptions,
                want_grads, coefficients=None) -> MLMRows:
    """Per-row statistics of the kernels; ``weight=None``: ``inputs`` are the ``[N, V]`` logits (``mlm_loss``).
    ``want_grads`` and ``coefficients`` are unused: the gradients come from ``mlm_backward``."""
    from tnops.ops.mlm_head import mlm_head_forward

    out = mlm_head_forward(inputs, weight, bias, labels, offsets=None if table is None else table.offsets,
                           syn_ids=None if table is None else table.ids, sr_embedding=sr_embedding,
                           prediction=options.prediction, temperature=options.temperature,
                           disallow_correct=options.disallow_correct, seed=options.seed or 0,
                           ignore_index=options.ignore_index, row_ids=row_ids)
    sr = sr_aux = None
    if sr_embedding is not None:
        sr = out["sr"]
        sr_aux = torch.stack([out["sr_dot"], out["sr_gold_sq"], out["sr_pred_sq"], out["gold_complement"]])
    else:  # the backward still needs 1 - p(gold), its exact gold entry
        sr_aux = out["gold_complement"][None]
    return MLMRows(out["nll"], out["lse"], out["zmean"], out["predictions"], out["corrected"], sr, sr_aux, None)


def mlm_backward(inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux,
                 options: MLMOptions, want):
    """``coef``: fp32 ``[3, N]`` rows α, γ, δ of ``dz = α·softmax - γ·onehot(gold) - δ/V``."""
    from tnops.ops.mlm_head import mlm_head_backward, sr_backward

    grads = [None, None, None]
    if any(want[:3]):
        complement = sr_aux[AUX_COMPLEMENT] if sr_aux is not None else None
        grads = mlm_head_backward(inputs, weight, bias, labels, lse, coef, gold_complement=complement,
                                  want=want[:3], ignore_index=options.ignore_index)
        grads = [None if g is None else g.to(t.dtype) for g, t in zip(grads, (inputs, weight, bias))]
    d_sr = None
    if want[3]:
        d_sr = sr_backward(sr_embedding, labels, predictions, sr_coef, sr_aux[0], sr_aux[1], sr_aux[2],
                           ignore_index=options.ignore_index).to(sr_embedding.dtype)
    return (*grads, d_sr)


def rtd_rows(logits, corrupted, original, attention_mask, corrected):
    from tnops.ops.rtd import rtd_forward

    return rtd_forward(logits, corrupted, original, attention_mask, corrected)
