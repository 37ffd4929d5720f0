"""Hugging Face ``*ForMaskedLM`` models trained on true negatives, without building ``[B, L, V]`` logits to train.

``apply_true_negatives(model, table)`` replaces the ``forward`` of that one instance (no class is touched,
nothing happens at import). A training call with ``labels`` runs the encoder as before, applies the LM head's
transform (dense → activation → LayerNorm) to the masked rows only (``labels != ignore_index``; selecting
them costs one host sync, as in ModernBERT's ``sparse_prediction``), and hands those rows with the tied decoder
weight and bias to ``tnops.linear_mlm_loss`` (hard correction with the table, soft regularization on the input
word embeddings). A call without labels is the original forward, untouched. ``remove_true_negatives`` undoes it.

What a patched call with labels returns:

* ``MaskedLMOutput(loss, logits, hidden_states, attentions)`` (a tuple ``(loss, logits, ...)`` with
  ``return_dict=False``, as before). ``loss`` is the tnops loss, in training and in evaluation alike (the same
  objective, options and normalisation). ``logits`` depends on ``return_logits``:

  - ``"eval"`` (default): in training mode (``model.training``) an **empty** ``[B, L, 0]`` tensor, so no
    ``[B, L, V]`` tensor is ever built for a training step (the field and the tuple layout stay valid, and code
    that would read scores from it fails loudly instead of silently reading something else); in eval mode
    (``model.eval()``, as ``Trainer.evaluate`` / ``predict`` and run_mlm.py's accuracy metric use it) the real
    ``[B, L, V]`` scores of the original head, the loss still the tnops one.
  - ``"always"``: the real ``[B, L, V]`` logits in both modes (a training step then pays for them).
  - ``"never"``: the empty ``[B, L, 0]`` tensor in both modes (evaluation without the ``[B, L, V]`` cost; the
    predictions are in ``true_negatives``).

  A call without labels always returns the real logits (it is the original forward).
* ``output.true_negatives`` (and ``model.tnops_last_output``, also set with ``return_dict=False``): a
  ``TrueNegativeOutput`` with the two loss terms, predictions and corrected rows ``[B, L]``, and the corrected
  and masked counts of the call (device tensors, read without a host sync until you ask for a number).

``torch.compile(model)`` of a patched model trains as the eager one does (tested: loss and every gradient, each
class). The detached loss terms kept in ``true_negatives`` are views of one stacked ``[2]`` tensor, never a
detached alias of ``loss`` itself: Inductor folds ``ce + 0·sr`` to ``ce`` and lowers ``detach`` to a no-op,
so with ``sr_weight == 0`` a plain ``mlm_loss.detach()`` came back as the very tensor object that is ``loss``,
and AOTAutograd's ``mark_non_differentiable`` on it (keyed on the object) stripped ``loss`` of its
``grad_fn`` (pytorch/pytorch issue 100348 and PR 195688; it still happens with torch 2.13).

Normalisation. Without ``num_items_in_batch`` the loss is ``linear_mlm_loss``'s mean: cross-entropy averaged
over *kept* rows (masked and not corrected) plus ``sr_weight`` × SR averaged over masked rows. With
``num_items_in_batch`` (the HF Trainer passes it: the number of masked labels in the whole optimizer step, all
accumulation micro-batches together) the loss is ``(Σ_kept CE + sr_weight · Σ_masked SR) / num_items_in_batch``,
as transformers' own losses do, so accumulated losses and gradients equal one big batch's. The kept count of
the step is unknown until every micro-batch has run, so corrected rows stay in that denominator: the CE term
is the kept-row mean scaled by kept/masked (the fraction of masked rows not corrected). ``Trainer.evaluate``
(transformers 5.25) passes the eval batch's masked count too, so ``eval_loss`` is normalised as the training loss.
"""
from __future__ import annotations

import inspect
import sys
import types
from dataclasses import dataclass

import torch

from tnops import functional
from tnops import validation as check

__all__ = ["RETURN_LOGITS", "SUPPORTED_MODELS", "TrueNegativeOutput", "apply_true_negatives", "correction_counts",
           "remove_true_negatives"]

SUPPORTED_MODELS = ("BertForMaskedLM", "RobertaForMaskedLM", "XLMRobertaForMaskedLM", "ElectraForMaskedLM",
                    "DistilBertForMaskedLM", "ModernBertForMaskedLM")
RETURN_LOGITS = ("eval", "always", "never")  # when a call with labels returns [B, L, V] logits (module docstring)


def _roberta_transform(model, hidden):
    head = model.lm_head  # RobertaLMHead / XLMRobertaLMHead.forward without its decoder
    gelu = sys.modules[type(head).__module__].gelu  # the activation that module's forward calls
    return head.layer_norm(gelu(head.dense(hidden)))


# class name -> the LM head's transform (dense → activation → LayerNorm) of the hidden rows [M, H] -> [M, E].
# The decoder is model.get_output_embeddings() (weight tied to the word embeddings, plus its bias) in every one.
_HEAD_TRANSFORMS = {
    "BertForMaskedLM": lambda model, hidden: model.cls.predictions.transform(hidden),
    "RobertaForMaskedLM": _roberta_transform,
    "XLMRobertaForMaskedLM": _roberta_transform,
    "ElectraForMaskedLM": lambda model, hidden: model.generator_predictions(hidden),
    "DistilBertForMaskedLM": lambda model, hidden: model.vocab_layer_norm(model.activation(
        model.vocab_transform(hidden))),
    "ModernBertForMaskedLM": lambda model, hidden: model.head(hidden),
}


@dataclass
class TrueNegativeOutput:
    """What the true-negative objective saw in one patched forward with labels (tensors on the model's device).

    Attributes:
        mlm_loss: float32 scalar, the cross-entropy term of ``loss`` (normalised as ``loss`` is), detached.
        sr_loss: float32 scalar, the soft-regularization term before ``sr_weight`` (0 when ``sr_weight == 0``).
        predictions: int64 ``[B, L]`` predicted id of each masked position, ``ignore_index`` elsewhere.
        corrected: bool ``[B, L]`` masked positions whose prediction is a listed synonym of the gold token.
        num_masked: int64 scalar, masked positions in the call.
        num_corrected: int64 scalar, positions dropped by hard correction.
    """

    mlm_loss: torch.Tensor
    sr_loss: torch.Tensor
    predictions: torch.Tensor
    corrected: torch.Tensor
    num_masked: torch.Tensor
    num_corrected: torch.Tensor

    @property
    def correction_rate(self) -> torch.Tensor:
        """float32 scalar: corrected / masked positions (0 when nothing is masked)."""
        return self.num_corrected.float() / self.num_masked.clamp_min(1).float()


class _Patch:
    """Per-instance state: the loss options, the original forward's signature and the running counts."""

    def __init__(self, model, options: dict, accepts_loss_kwargs_before):
        self.options = options
        self.signature = inspect.signature(type(model).forward)  # (self, input_ids, ..., labels, **kwargs)
        self.var_keyword = next((p.name for p in self.signature.parameters.values()
                                 if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        self.instance_forward = model.__dict__.get("forward")  # e.g. an accelerate hook; restored on removal
        self.accepts_loss_kwargs_before = accepts_loss_kwargs_before
        self.masked_count = None  # running sums over training forwards, for correction_counts / the callback
        self.corrected_count = None


def _supported_classes() -> dict:
    import transformers

    return {name: getattr(transformers, name) for name in SUPPORTED_MODELS if hasattr(transformers, name)}


def _family(model) -> str:
    """The supported class ``model`` is (a subclass counts when it keeps that class's forward)."""
    classes = _supported_classes()
    for name, cls in classes.items():
        if isinstance(model, cls) and type(model).forward is cls.forward:
            return name
    absent = [name for name in SUPPORTED_MODELS if name not in classes]
    note = f" ({', '.join(absent)} not in the installed transformers)" if absent else ""
    raise TypeError(f"model: apply_true_negatives supports {', '.join(SUPPORTED_MODELS)}{note}; got "
                    f"{type(model).__name__}")


def apply_true_negatives(model, synonyms=None, *, sr_weight: float = 0.0, prediction: str = "argmax",
                         temperature: float = 1.0, disallow_correct: bool = False, seed: int | None = None,
                         ignore_index: int = -100, backend: str | None = None, return_logits: str = "eval",
                         label_smoothing: float = 0.0, z_loss: float = 0.0):
    """Train ``model`` (one instance) on the true-negative MLM objective through ``tnops.linear_mlm_loss``.

    Args:
        model: a ``BertForMaskedLM``, ``RobertaForMaskedLM``, ``XLMRobertaForMaskedLM``, ``ElectraForMaskedLM``,
            ``DistilBertForMaskedLM`` or ``ModernBertForMaskedLM`` instance (TypeError otherwise).
        synonyms: ``tnops.SynonymTable`` over the model's vocabulary (hard correction), or None (plain MLM).
        sr_weight: weight of soft regularization on the input word embeddings (0: off).
        prediction: ``"argmax"`` (BERT) or ``"sample"`` (Gumbel-max, an ELECTRA generator).
        temperature, disallow_correct, seed, ignore_index, backend, label_smoothing, z_loss: as
            ``tnops.linear_mlm_loss``. ``seed=None``
            draws a fresh seed from torch's generator on every call (what training wants).
        return_logits: when a call with labels also returns the real ``[B, L, V]`` logits: ``"eval"`` (in eval
            mode only, so ``Trainer.evaluate`` metrics work and training never builds them), ``"always"`` or
            ``"never"`` (an empty ``[B, L, 0]`` tensor instead). The loss is the tnops loss in every case.
    Returns:
        ``model`` itself. Calling it again replaces the options.

    Forward with ``labels [B, L]`` (extra keyword ``num_items_in_batch``: see the module docstring) returns a
    ``MaskedLMOutput`` whose ``loss`` is the tnops loss, ``logits`` an empty ``[B, L, 0]`` tensor in training
    (the ``[B, L, V]`` scores in eval mode; see ``return_logits``), and ``true_negatives`` a
    ``TrueNegativeOutput``; without labels the model is unchanged. ``nn.DataParallel``
    replicas call the original instance (a clear error); use DistributedDataParallel.
    """
    family = _family(model)
    vocab_size = model.get_output_embeddings().weight.shape[0]
    check.mlm_options(vocab_size=vocab_size, synonyms=synonyms, prediction=prediction, temperature=temperature,
                      disallow_correct=disallow_correct, seed=seed, sr_weight=sr_weight, ignore_index=ignore_index,
                      reduction="mean", label_smoothing=label_smoothing, z_loss=z_loss)
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend: expected a str or None, got {type(backend).__name__}")
    check.choice("return_logits", return_logits, RETURN_LOGITS)
    remove_true_negatives(model)
    options = dict(synonyms=synonyms, sr_weight=float(sr_weight), prediction=prediction,
                   temperature=float(temperature), disallow_correct=disallow_correct, seed=seed,
                   ignore_index=int(ignore_index), backend=backend, return_logits=return_logits,
                   label_smoothing=float(label_smoothing), z_loss=float(z_loss))
    model._tnops_patch = _Patch(model, options, model.__dict__.get("accepts_loss_kwargs"))
    model._tnops_family = family
    model.forward = types.MethodType(_make_forward(model._tnops_patch.signature), model)
    model.accepts_loss_kwargs = True  # the HF Trainer then passes num_items_in_batch
    model.tnops_last_output = None
    return model


def remove_true_negatives(model):
    """Undo ``apply_true_negatives`` on ``model`` (a no-op on a model that is not patched); returns ``model``."""
    patch = model.__dict__.get("_tnops_patch")
    if patch is None:
        return model
    del model.forward
    if patch.instance_forward is not None:
        model.forward = patch.instance_forward
    del model.accepts_loss_kwargs
    if patch.accepts_loss_kwargs_before is not None:
        model.accepts_loss_kwargs = patch.accepts_loss_kwargs_before
    for name in ("_tnops_patch", "_tnops_family", "tnops_last_output"):
        model.__dict__.pop(name, None)
    return model


def correction_counts(model, reset: bool = False) -> tuple[int, int]:
    """``(corrected, masked)`` positions summed over the patched model's training forwards since the last reset.

    Reading them is one host sync; ``reset=True`` starts a new interval (the Trainer callback does, per log).
    """
    patch = model.__dict__.get("_tnops_patch")
    if patch is None:
        raise ValueError("model: not patched by apply_true_negatives")
    counts = (0, 0) if patch.masked_count is None else (int(patch.corrected_count), int(patch.masked_count))
    if reset:
        patch.masked_count = patch.corrected_count = None
    return counts


def _make_forward(signature: inspect.Signature):
    """A fresh function per patch, so it can carry the original signature (with ``**kwargs``) for the Trainer."""
    def forward(self, *args, **kwargs):
        return _true_negative_forward(self, *args, **kwargs)

    params = list(signature.parameters.values())
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        params.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    forward.__signature__ = signature.replace(parameters=params)
    forward.__doc__ = "The model's forward with labels on the true-negative objective (tnops.integrations)."
    return forward


def _true_negative_forward(model, *args, **kwargs):
    patch = model._tnops_patch
    num_items_in_batch = kwargs.pop("num_items_in_batch", None)
    arguments = dict(patch.signature.bind(model, *args, **kwargs).arguments)  # only what the caller passed
    arguments.pop(next(iter(patch.signature.parameters)))  # self
    arguments.update(arguments.pop(patch.var_keyword, {}) if patch.var_keyword else {})
    labels = arguments.pop("labels", None)
    if labels is None:  # exactly the original call
        if num_items_in_batch is not None and patch.var_keyword:
            kwargs["num_items_in_batch"] = num_items_in_batch
        if patch.instance_forward is not None:
            return patch.instance_forward(*args, **kwargs)
        return type(model).forward(model, *args, **kwargs)
    return_dict = arguments.pop("return_dict", None)  # the encoder is always asked for a ModelOutput
    if return_dict is None:
        return_dict = getattr(model.config, "return_dict", True)
    output = _loss_forward(model, patch, labels, arguments, num_items_in_batch)
    return output if return_dict else output.to_tuple()


def _loss_forward(model, patch: _Patch, labels, encoder_arguments: dict, num_items_in_batch):
    from transformers.modeling_outputs import MaskedLMOutput

    options = patch.options
    encoder = getattr(model, model.base_model_prefix)
    word_embeddings = model.get_input_embeddings().weight
    for name in ("input_ids", "inputs_embeds"):
        given = encoder_arguments.get(name)
        if given is not None and given.device != word_embeddings.device:
            raise RuntimeError(f"{name}: on {given.device} but the patched model is on {word_embeddings.device}; "
                               "a patched model cannot run under nn.DataParallel (use DistributedDataParallel)")
    # flat positions of the masked rows: the one data-dependent op (one host sync; compiled, one graph break,
    # taken before the encoder so that it is traced once); they also key the Philox samples of the rows
    positions = (labels != options["ignore_index"]).reshape(-1).nonzero().squeeze(1)  # [M]
    outputs = encoder(**encoder_arguments, return_dict=True)
    sequence_output = outputs[0]  # [B, L, H]
    labels, positions = labels.to(sequence_output.device), positions.to(sequence_output.device)
    if tuple(labels.shape) != tuple(sequence_output.shape[:-1]):
        raise ValueError(f"labels: expected shape {tuple(sequence_output.shape[:-1])} (batch, sequence), got "
                         f"{tuple(labels.shape)}")
    masked = labels != options["ignore_index"]
    transform = _HEAD_TRANSFORMS[model._tnops_family]
    decoder = model.get_output_embeddings()
    mode = options["return_logits"]
    if mode == "always" or (mode == "eval" and not model.training):  # the original head's [B, L, V] scores
        transformed = transform(model, sequence_output)  # [B, L, E]
        logits = decoder(transformed)
        rows = transformed.reshape(-1, transformed.shape[-1]).index_select(0, positions)
    else:  # the head on the masked rows only: no [B, L, V] tensor
        rows = transform(model, sequence_output.reshape(-1, sequence_output.shape[-1]).index_select(0, positions))
        logits = sequence_output.new_empty((*labels.shape, 0))
    row_ids = positions if options["prediction"] == "sample" else None
    result = functional.linear_mlm_loss(
        rows, decoder.weight, labels.reshape(-1).index_select(0, positions), bias=decoder.bias,
        synonyms=options["synonyms"], prediction=options["prediction"], temperature=options["temperature"],
        disallow_correct=options["disallow_correct"], seed=options["seed"], sr_weight=options["sr_weight"],
        sr_embedding=word_embeddings if options["sr_weight"] else None, ignore_index=options["ignore_index"],
        reduction="mean" if num_items_in_batch is None else "sum", row_ids=row_ids, backend=options["backend"],
        label_smoothing=options["label_smoothing"], z_loss=options["z_loss"])
    loss, mlm, sr = result.loss, result.mlm_loss, result.sr_loss
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss, mlm, sr = loss / num_items_in_batch, mlm / num_items_in_batch, sr / num_items_in_batch
    _record(model, patch, labels, masked, positions, result, mlm, sr)
    output = MaskedLMOutput(loss=loss, logits=logits,
                            hidden_states=getattr(outputs, "hidden_states", None),
                            attentions=getattr(outputs, "attentions", None))
    output.true_negatives = model.tnops_last_output
    return output


def _record(model, patch: _Patch, labels, masked, positions, result, mlm, sr) -> None:
    """Scatter the per-row results back to ``[B, L]`` and keep the counts (device tensors, no host sync)."""
    flat = labels.reshape(-1)
    predictions = torch.full_like(flat, patch.options["ignore_index"], dtype=torch.int64).index_copy(
        0, positions, result.predictions).reshape(labels.shape)
    corrected = torch.zeros_like(flat, dtype=torch.bool).index_copy(0, positions, result.corrected).reshape(
        labels.shape)
    # one stacked copy, never `mlm.detach()`: under Inductor that can be the very object `loss` is (sr_weight 0)
    # and AOTAutograd's mark_non_differentiable then strips `loss` of its grad_fn (module docstring)
    terms = torch.stack((mlm, sr.to(mlm.dtype))).detach()
    stats = TrueNegativeOutput(mlm_loss=terms[0], sr_loss=terms[1], predictions=predictions,
                               corrected=corrected, num_masked=masked.sum(), num_corrected=result.corrected.sum())
    model.tnops_last_output = stats
    if model.training and torch.is_grad_enabled():
        if patch.masked_count is None:
            patch.masked_count = torch.zeros((), dtype=torch.int64, device=labels.device)
            patch.corrected_count = torch.zeros_like(patch.masked_count)
        patch.masked_count += stats.num_masked
        patch.corrected_count += stats.num_corrected
