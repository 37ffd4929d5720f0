"""``torch.library`` custom ops over the backends, so ``torch.compile(fullgraph=True)`` traces the losses.

Dynamo cannot trace the backends themselves (data-dependent row selection, Python chunk loops, Triton
launches), so under compilation ``functional`` calls these opaque ops instead: ``tnops::mlm_rows``
returns per-row CE, log-sum-exp, predictions and the corrected mask; ``tnops::mlm_rows_backward`` forms the
gradients from them.  Everything else (SR, reductions) stays ordinary traceable tensor code.  Eager calls
keep using the autograd Functions directly (the torch path there fuses the gradient into the forward).
"""
from __future__ import annotations

import torch
from torch import Tensor

from tnops import torch_chunked

def _table(offsets: Tensor | None, syn_ids: Tensor | None):
    if offsets is None or syn_ids is None:
        return None
    from tnops.synonyms import SynonymTable

    return SynonymTable(offsets, syn_ids)


@torch.library.custom_op("tnops::mlm_rows", mutates_args=())
def mlm_rows(inputs: Tensor, weight: Tensor | None, bias: Tensor | None, labels: Tensor, row_ids: Tensor | None,
             offsets: Tensor | None, syn_ids: Tensor | None, seed: Tensor, prediction: str, temperature: float,
             disallow_correct: bool, ignore_index: int, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row ``(ce fp32 [N], lse fp32 [N], predictions int64 [N], corrected bool [N])``; ``seed`` is an int64 scalar."""
    seed_value = int(seed)
    if backend == "triton":
        from tnops.ops.mlm_head_launch import mlm_head_forward

        out = mlm_head_forward(inputs, weight, bias, labels, offsets=offsets, syn_ids=syn_ids, prediction=prediction,
                               temperature=temperature, disallow_correct=disallow_correct, seed=seed_value,
                               ignore_index=ignore_index, row_ids=row_ids)
        return out["loss"], out["lse"], out["predictions"], out["corrected"]
    opts = torch_chunked.MLMOptions(synonyms=_table(offsets, syn_ids), prediction=prediction,
                                    temperature=temperature, disallow_correct=disallow_correct, seed=seed_value,
                                    ignore_index=ignore_index, reduction="none")
    with torch.autocast(inputs.device.type, enabled=False):
        ce, lse, predictions, corrected, _ = torch_chunked.forward_chunks(
            torch_chunked.Head(inputs, weight, bias), labels, row_ids, opts, (False, False, False))
    return ce.float(), lse.float(), predictions, corrected


@mlm_rows.register_fake
def _(inputs, weight, bias, labels, row_ids, offsets, syn_ids, seed, prediction, temperature, disallow_correct,
      ignore_index, backend):
    n = labels.shape[0]
    rows = inputs.new_empty((n,), dtype=torch.float32)
    return rows, rows.clone(), labels.new_empty((n,), dtype=torch.int64), labels.new_empty((n,), dtype=torch.bool)


@torch.library.custom_op("tnops::mlm_rows_backward", mutates_args=())
def mlm_rows_backward(inputs: Tensor, weight: Tensor | None, bias: Tensor | None, labels: Tensor, lse: Tensor,
                      coef: Tensor, want_inputs: bool, want_weight: bool, want_bias: bool,
                      backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``Σ coef[row] · CE[row]``: ``(d_inputs, d_weight, d_bias)``, empty where not wanted."""
    want_bias = want_bias and bias is not None
    want_weight = want_weight and weight is not None
    if backend == "triton":
        from tnops.ops.mlm_head_launch import mlm_head_backward

        grads = mlm_head_backward(inputs, weight, bias, labels, lse, coef, want=(want_inputs, want_weight, want_bias))
        dtypes = (inputs.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype)
        grads = [None if g is None else g.to(dt) for g, dt in zip(grads, dtypes)]
    else:
        dtypes = (inputs.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype)
        with torch.autocast(inputs.device.type, enabled=False):
            grads = torch_chunked.recompute_grads(torch_chunked.Head(inputs, weight, bias), labels, lse, coef != 0,
                                                  coef, (want_inputs, want_weight, want_bias), dtypes)
    return tuple(inputs.new_empty(0) if g is None else g for g in grads)


@mlm_rows_backward.register_fake
def _(inputs, weight, bias, labels, lse, coef, want_inputs, want_weight, want_bias, backend):
    empty = inputs.new_empty(0)
    return (torch.empty_like(inputs) if want_inputs else empty,
            torch.empty_like(weight) if want_weight and weight is not None else empty,
            torch.empty_like(bias) if want_bias and bias is not None else empty)


def _setup_context(ctx, inputs, output):
    inp, weight, bias, labels = inputs[0], inputs[1], inputs[2], inputs[3]
    ctx.ignore_index, ctx.backend = inputs[11], inputs[12]
    _, lse, predictions, corrected = output
    ctx.save_for_backward(inp, weight, bias, labels, lse, corrected)


def _backward(ctx, grad_ce, _grad_lse, _grad_pred, _grad_corrected):
    inputs, weight, bias, labels, lse, corrected = ctx.saved_tensors
    kept = (labels != ctx.ignore_index) & ~corrected
    coef = torch.where(kept, grad_ce.float(), torch.zeros_like(grad_ce, dtype=torch.float32))
    want = ctx.needs_input_grad
    d_inputs, d_weight, d_bias = mlm_rows_backward(inputs, weight, bias, labels, lse, coef, want[0], want[1],
                                                   want[2], ctx.backend)
    return (d_inputs if want[0] else None, d_weight if want[1] else None, d_bias if want[2] else None,
            None, None, None, None, None, None, None, None, None, None)


mlm_rows.register_autograd(_backward, setup_context=_setup_context)
