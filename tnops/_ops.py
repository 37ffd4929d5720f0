"""The ``tnops::`` custom ops: the one way every backend is reached, in eager mode and under torch.compile.

``tnops::mlm_head`` runs a backend's ``mlm_forward`` and returns its per-row statistics (plus the fused
gradients where the backend computes them in the forward pass); ``tnops::mlm_head_backward`` runs its
``mlm_backward``; ``tnops::rtd_rows`` the replaced-token-detection BCE and its derivative.  Each op has a fake
kernel (shapes only) and ``register_autograd``, so ``torch.compile(fullgraph=True)`` traces the public losses
and eager calls run the very same code.  Options travel as schema arguments (``MLMOptions.op_args``); the
synonym table as its CSR tensors; the seed as an int64 tensor, so a seed drawn inside a graph stays there.

The row contract (Cut Cross-Entropy's idea): a backend returns per-row statistics, ``nll = lse - z_gold``, ``lse``
and ``zmean`` (the mean logit), and its backward takes per-row coefficients ``(α, γ, δ)`` of one generic logit
gradient ``dz = α·softmax(z) - γ·onehot(gold) - δ/V``; no backend knows which loss they make.  The loss is composed
above (``tnops.functional``, ``MLMOptions.row_coefficients``): any loss of the form
``f = c·nll + (a - c)·lse + (b/2)·lse² - d·zmean`` per kept row, given as ``coefficients = (a, b, c, d)``, whose
gradient is ``(a + b·lse)·softmax - c·onehot - d/V`` (CE: (1, 0, 1, 0); label smoothing ε: c = 1 - ε, d = ε;
z-loss λ: b = 2λ).  The op also returns ``objective_sum = Σ_kept f_r``.

Fused gradients: when a backend ``FUSES_GRADIENTS`` and ``want_*`` flags are set, ``mlm_head`` computes
``d objective_sum / d(inputs, weight, bias)`` in its forward pass and hands it out through ``objective_sum``: its
backward scales the stored gradients by the upstream scalar (in place, once), which is exact for any use of that
scalar.  The per-row statistics are then not differentiable (a per-row weighting would need other gradients than
the stored ones), so no use of the outputs can silently get a wrong gradient.  Without fusion every statistic and
``objective_sum`` are differentiable; their upstream gradients become the rows' (α, γ, δ).

Checks inside the ops: every index a kernel dereferences (labels, row ids, the CSR table, predictions) is
checked in the op's own body before any backend runs, so a compiled graph (which skips the Python checks of
``tnops.validation``) raises the same ValueError instead of reading out of bounds; the kernels check again.
Double backward (``create_graph=True``) is refused by name: the gradients returned then carry a node that raises
``DOUBLE_BACKWARD_ERROR`` when differentiated (as ``@once_differentiable`` does), never a silent zero.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tnops import backends, losses
from tnops import validation as check
from tnops.options import MLMOptions
from tnops.synonyms.csr import CSRView

_EMPTY_SHAPE = (0,)
DOUBLE_BACKWARD_ERROR = (
    "tnops: double backward through the tnops losses is not supported (a gradient of a gradient, e.g. "
    "torch.autograd.grad(..., create_graph=True) followed by a backward through that gradient, as a gradient "
    "penalty does); compute such a penalty on a loss built from plain PyTorch ops")


class _RefuseDoubleBackward(torch.autograd.Function):
    """Identity on a gradient; differentiating through it raises ``DOUBLE_BACKWARD_ERROR``."""

    @staticmethod
    def forward(grad):
        return grad.view_as(grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)


FUSED_TWICE_ERROR = (
    "tnops: a second backward pass through the same fused tnops loss (retain_graph=True) is not supported: the "
    "fused backends (native, torch) compute the gradients in the forward pass and hand them out once; compute the "
    "loss again, or use backend='reference' or 'triton' for repeated backward passes")


def _first_order_only(grads):
    """Gradients as computed; under ``create_graph=True`` each one that exists gets a refusing grad_fn."""
    if not torch.is_grad_enabled():
        return grads
    return [g if g is None else _RefuseDoubleBackward.apply(g.detach().requires_grad_()) for g in grads]


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(_EMPTY_SHAPE)


def _is_empty(t: Tensor) -> bool:
    """True for the placeholder of an absent result (inputs are 2-D and a bias has V >= 1 entries, so a real
    result is never 1-D and empty)."""
    return tuple(t.shape) == _EMPTY_SHAPE


def fuses(backend: str, want: tuple[bool, bool, bool]) -> bool:
    return any(want) and backends.get(backend).FUSES_GRADIENTS


@torch.library.custom_op("tnops::mlm_head", mutates_args=())
def mlm_head(inputs: Tensor, weight: Tensor | None, bias: Tensor | None, labels: Tensor, row_ids: Tensor | None,
             syn_offsets: Tensor | None, syn_ids: Tensor | None, syn_keys: Tensor | None,
             sr_embedding: Tensor | None, seed: Tensor, prediction: str, temperature: float, disallow_correct: bool,
             ignore_index: int, backend: str, want_inputs: bool, want_weight: bool, want_bias: bool,
             coefficients: list[float]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                                  Tensor, Tensor, Tensor]:
    """``(nll [N], lse [N], zmean [N], objective_sum [], predictions [N], corrected [N], sr [N] | empty,
    sr_aux [K, N] | empty, d_inputs | empty, d_weight | empty, d_bias | empty)`` of a backend over the rows of
    ``inputs [N, E]``.  ``coefficients = (a, b, c, d)``: ``objective_sum = Σ_kept f_r`` with
    ``f = c·nll + (a - c)·lse + (b/2)·lse² - d·zmean`` (module docstring)."""
    vocab = inputs.shape[1] if weight is None else weight.shape[0]
    check.op_indices(labels, vocab, ignore_index, row_ids, syn_offsets, syn_ids, syn_keys)
    table = None if syn_offsets is None else CSRView(syn_offsets, syn_ids, syn_keys)
    options = MLMOptions.from_op_args(prediction, temperature, disallow_correct, ignore_index, int(seed))
    want = (want_inputs, want_weight and weight is not None, want_bias and bias is not None)
    coefficients = tuple(float(x) for x in coefficients)
    rows = backends.get(backend).mlm_forward(inputs, weight, bias, labels, row_ids, table, sr_embedding, options,
                                             want if fuses(backend, want) else (False, False, False), coefficients)
    grads = rows.grads or (None, None, None)
    kept = (labels != ignore_index) & ~rows.corrected
    total = objective_rows(rows.nll, rows.lse, rows.zmean, kept, coefficients).sum()
    return (rows.nll, rows.lse, rows.zmean, total, rows.predictions, rows.corrected,
            _empty(rows.nll) if rows.sr is None else rows.sr,
            _empty(rows.nll) if rows.sr_aux is None else rows.sr_aux,
            *(_empty(inputs) if g is None else g for g in grads))


def objective_rows(nll: Tensor, lse: Tensor, zmean: Tensor, kept: Tensor, coefficients) -> Tensor:
    """``f_r = c·nll + (a - c)·lse + (b/2)·lse² - d·zmean`` on kept rows, 0 elsewhere (selected, so a NaN of a dead
    row stays out); terms with a zero coefficient are left out, so plain CE is ``nll`` itself, bit for bit."""
    a, b, c, d = coefficients
    f = nll if c == 1 else c * nll
    if a != c:
        f = f + (a - c) * lse
    if b:
        f = f + (0.5 * b) * lse * lse
    if d:
        f = f - d * zmean
    return torch.where(kept, f, 0)


@mlm_head.register_fake
def _(inputs, weight, bias, labels, row_ids, syn_offsets, syn_ids, syn_keys, sr_embedding, seed, prediction,
      temperature, disallow_correct, ignore_index, backend, want_inputs, want_weight, want_bias, coefficients):
    n = labels.shape[0]
    rows = inputs.new_empty((n,), dtype=losses.compute_dtype(inputs.dtype))
    sr = _empty(rows) if sr_embedding is None else \
        inputs.new_empty((n,), dtype=losses.compute_dtype(sr_embedding.dtype))
    want = (want_inputs, want_weight and weight is not None, want_bias and bias is not None)
    fused = fuses(backend, want)
    aux_rows = backends.get(backend).aux_rows(sr_embedding is not None)
    grads = [torch.empty_like(t) if fused and w else _empty(inputs) for t, w in zip((inputs, weight, bias), want)]
    return (rows, rows.clone(), rows.clone(), rows.new_empty(()), labels.new_empty((n,), dtype=torch.int64),
            labels.new_empty((n,), dtype=torch.bool),
            sr, rows.new_empty((aux_rows, n)) if aux_rows else _empty(rows), *grads)


@torch.library.custom_op("tnops::mlm_head_backward", mutates_args=())
def mlm_head_backward(inputs: Tensor, weight: Tensor | None, bias: Tensor | None, labels: Tensor, lse: Tensor,
                      coef: Tensor, sr_embedding: Tensor | None, predictions: Tensor, sr_coef: Tensor,
                      sr_aux: Tensor, ignore_index: int, backend: str, want_inputs: bool, want_weight: bool,
                      want_bias: bool, want_sr: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of the rows' ``dz = α·softmax(z) - γ·onehot(gold) - δ/V`` (``coef [3, N]`` = α, γ, δ) and of
    ``Σ sr_coef · sr``: ``(d_inputs, d_weight, d_bias, d_sr_embedding)``, each empty where not wanted."""
    options = MLMOptions(ignore_index=ignore_index)
    want = (want_inputs, want_weight and weight is not None, want_bias and bias is not None,
            want_sr and sr_embedding is not None)
    if any(want[:3]):
        check.id_range("labels", labels, inputs.shape[1] if weight is None else weight.shape[0],
                       (coef != 0).any(0))
    if want[3]:
        live = sr_coef != 0
        check.id_range("labels", labels, sr_embedding.shape[0], live)
        check.id_range("predictions", predictions, sr_embedding.shape[0], live)
    grads = backends.get(backend).mlm_backward(inputs, weight, bias, labels, lse, coef, sr_embedding, predictions,
                                               sr_coef, None if _is_empty(sr_aux) else sr_aux, options, want)
    return tuple(_empty(inputs) if g is None or not w else g for g, w in zip(grads, want))


@mlm_head_backward.register_fake
def _(inputs, weight, bias, labels, lse, coef, sr_embedding, predictions, sr_coef, sr_aux, ignore_index, backend,
      want_inputs, want_weight, want_bias, want_sr):
    want = (want_inputs, want_weight and weight is not None, want_bias and bias is not None,
            want_sr and sr_embedding is not None)
    return tuple(torch.empty_like(t) if w else _empty(inputs)
                 for t, w in zip((inputs, weight, bias, sr_embedding), want))


def _traced(t: Tensor) -> bool:
    """True while a graph is being traced (torch.compile, AOTAutograd, export): in-place updates of saved outputs are
    not allowed there."""
    return (torch.compiler.is_compiling() or torch._guards.detect_fake_mode() is not None
            or torch._is_functional_tensor(t))


def _head_setup(ctx, inputs, output):
    (x, weight, bias, labels, _, _, _, _, sr_embedding, _, _, _, _, ignore_index, backend, w_in, w_w, w_b,
     coefficients) = inputs
    nll, lse, zmean, _, predictions, corrected, _, sr_aux, d_in, d_w, d_b = output
    ctx.ignore_index, ctx.backend, ctx.coefficients = ignore_index, backend, tuple(float(c) for c in coefficients)
    ctx.fused = fuses(backend, (w_in, w_w and weight is not None, w_b and bias is not None))
    if ctx.fused:  # the stored gradients are those of objective_sum alone (module docstring)
        ctx.mark_non_differentiable(nll, lse, zmean)
    ctx.has = (weight is not None, bias is not None, sr_embedding is not None)
    ctx.sr_is_weight = sr_embedding is not None and sr_embedding is weight  # SR on the head's own table (default)
    ctx.handed_out = False
    # Outputs nobody differentiates (the fused gradients above all) get None, not zeros of their shape: a
    # materialised zero d_weight would be one more [V, E] buffer at the backward's peak.
    ctx.set_materialize_grads(False)
    saved = (d_in, d_w, d_b) if ctx.fused else (x, weight, bias)
    ctx.save_for_backward(*saved, labels, lse, corrected, predictions, sr_embedding, sr_aux)


def _row_coefficients(coefficients, lse, masked, kept, g_nll, g_lse, g_zmean, g_sum):
    """``[3, N]`` (α, γ, δ) of ``dz = α·softmax - γ·onehot(gold) - δ/V`` from the upstream gradients of the per-row
    statistics (``nll``: softmax - onehot; ``lse``: softmax; ``zmean``: 1/V) and of ``objective_sum``."""
    a, b, c, d = coefficients
    g_sum = g_sum.to(lse.dtype)
    on_kept = torch.where(kept, g_sum, 0)
    alpha = on_kept * (a + b * lse) if b else on_kept * a
    gamma = on_kept * c
    delta = on_kept * d
    if g_nll is not None:
        alpha, gamma = alpha + g_nll.to(lse.dtype), gamma + g_nll.to(lse.dtype)
    if g_lse is not None:
        alpha = alpha + g_lse.to(lse.dtype)
    if g_zmean is not None:
        delta = delta - g_zmean.to(lse.dtype)
    return torch.where(masked, torch.stack([alpha, gamma, delta]), 0)


def _head_backward(ctx, g_nll, g_lse, g_zmean, g_sum, _g_pred, _g_corrected, g_sr, _g_aux, _g_din, _g_dw, _g_db):
    if ctx.handed_out:  # the fused buffers were scaled in place and handed to the first backward
        raise RuntimeError(FUSED_TWICE_ERROR)
    first, second, third, labels, lse, corrected, predictions, sr_embedding, sr_aux = ctx.saved_tensors
    g_sum = lse.new_zeros(()) if g_sum is None else g_sum
    need = ctx.needs_input_grad
    masked = labels != ctx.ignore_index
    kept = masked & ~corrected
    grads = [None] * 19
    want_sr = ctx.has[2] and need[8] and g_sr is not None
    if ctx.fused:
        # The stored gradients are this op's own buffers: scaled in place and handed out (as Liger-Kernel does),
        # so no second [V, E] copy of d weight exists at the backward's peak.
        for i, g in enumerate((first, second, third)):
            if need[i]:
                if _is_empty(g):
                    raise RuntimeError("tnops::mlm_head: a gradient is needed that the forward pass did not fuse")
                if _traced(g):  # a graph being traced: functional (the compiler plans the buffers)
                    grads[i] = g * g_sum.to(g.dtype)
                else:
                    grads[i] = g.mul_(g_sum.to(g.dtype))
                    ctx.handed_out = True
        if want_sr and ctx.sr_is_weight and need[1] and grads[1].dtype == lse.dtype:
            # SR on the head's own table: its gradient touches 2 rows per masked token; add them into d weight
            # in place instead of building a dense [V, E] gradient for autograd to add (the fused backends' SR is
            # the shared maths of tnops.losses)
            losses.sr_rows_backward_add_(grads[1], sr_embedding, labels, predictions, masked,
                                         torch.where(masked, g_sr.to(lse.dtype), torch.zeros_like(lse)))
            want_sr = False
    want_ce = not ctx.fused and any(need[:3])
    if want_ce or want_sr:
        inputs, weight, bias = (first, second, third) if not ctx.fused else (None, None, None)
        zero = torch.zeros_like(lse)  # coefficients in the compute dtype (float64 for float64 inputs)
        coef = _row_coefficients(ctx.coefficients, lse, masked, kept, g_nll, g_lse, g_zmean, g_sum) if want_ce \
            else lse.new_zeros((3, lse.shape[0]))
        sr_coef = torch.where(masked, g_sr.to(lse.dtype), zero) if want_sr else zero
        if inputs is None:  # fused CE: only the SR gradient is left; any tensor serves as the placeholder input
            inputs, weight, bias = sr_embedding, None, None
        d_in, d_w, d_b, d_sr = mlm_head_backward(
            inputs, weight if ctx.has[0] else None, bias if ctx.has[1] else None, labels, lse, coef,
            sr_embedding, predictions, sr_coef, sr_aux, ctx.ignore_index, ctx.backend,
            want_ce and need[0], want_ce and need[1], want_ce and need[2], want_sr)
        if want_ce:
            grads[0], grads[1], grads[2] = (d if need[i] else None for i, d in enumerate((d_in, d_w, d_b)))
        if want_sr:
            grads[8] = d_sr
    return tuple(_first_order_only(grads))


mlm_head.register_autograd(_head_backward, setup_context=_head_setup)


@torch.library.custom_op("tnops::rtd_rows", mutates_args=())
def rtd_rows(logits: Tensor, corrupted: Tensor, original: Tensor, attention_mask: Tensor | None,
             corrected: Tensor | None, backend: str) -> tuple[Tensor, Tensor]:
    """Per-position RTD BCE and its derivative, ``[N]`` each (0 at padding)."""
    return backends.get(backend).rtd_rows(logits, corrupted, original, attention_mask, corrected)


@rtd_rows.register_fake
def _(logits, corrupted, original, attention_mask, corrected, backend):
    out = logits.new_empty(logits.shape, dtype=losses.compute_dtype(logits.dtype))
    return out, torch.empty_like(out)


def _rtd_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.logits_dtype = inputs[0].dtype


def _rtd_backward(ctx, g_loss, _g_grad):
    (grad,) = ctx.saved_tensors
    return (*_first_order_only([(g_loss * grad).to(ctx.logits_dtype)]), None, None, None, None, None)


rtd_rows.register_autograd(_rtd_backward, setup_context=_rtd_setup)


@torch.library.custom_op("tnops::sr_rows", mutates_args=())
def sr_rows(embedding: Tensor, gold: Tensor, pred: Tensor, live: Tensor) -> Tensor:
    """Per-row SR ``1 - cos(e_gold, e_pred)`` (0 where not ``live``), the maths of ``tnops.losses``."""
    check.id_range("gold_ids", gold, embedding.shape[0], live)
    check.id_range("pred_ids", pred, embedding.shape[0], live)
    return losses.sr_rows(embedding, gold, pred, live)


@sr_rows.register_fake
def _(embedding, gold, pred, live):
    return embedding.new_empty(gold.shape, dtype=losses.compute_dtype(embedding.dtype))


def _sr_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _sr_backward(ctx, g_rows):
    embedding, gold, pred, live = ctx.saved_tensors
    return (*_first_order_only([losses.sr_rows_backward(embedding, gold, pred, live, g_rows).to(embedding.dtype)]),
            None, None, None)


sr_rows.register_autograd(_sr_backward, setup_context=_sr_setup)
