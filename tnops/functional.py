"""The public losses: argument checks, then dispatch to a backend (``tnops.backends``).

Shapes follow ``torch.nn.functional.cross_entropy`` with a leading-shape twist: ``hidden [*, E]`` with
``labels [*]`` (e.g. ``[B, L, E]`` with ``[B, L]``), outputs per row have the shape ``[*]``.
"""
from __future__ import annotations

import torch

from tnops import backends, reference, torch_chunked
from tnops import random as tn_random
from tnops import validation as check
from tnops.outputs import MLMLossOutput


def linear_mlm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, bias: torch.Tensor | None = None,
                    synonyms=None, prediction: str = "argmax", temperature: float = 1.0, disallow_correct: bool = False,
                    seed: int | None = None, sr_weight: float = 0.0, sr_embedding: torch.Tensor | None = None,
                    ignore_index: int = -100, reduction: str = "mean", row_ids: torch.Tensor | None = None) -> MLMLossOutput:
    """MLM loss through the LM head without materialising ``[N, V]`` logits, with true-negative objectives.

    ``logits = hidden @ weight.T + bias``; each masked row is predicted (argmax, or a Gumbel-max sample of
    ``softmax(logits / temperature)``); a row whose prediction is a synonym of its label (``synonyms``)
    is *corrected* and drops out of the cross-entropy; ``sr_weight > 0`` adds ``1 - cos(e_label, e_pred)``.

    Args:
        hidden: float ``[*, E]``.
        weight: ``[V, E]`` LM-head weight (the tied word embeddings in BERT/ELECTRA).
        labels: int ``[*]``, gold id in ``[0, V)`` or ``ignore_index``.
        bias: ``[V]`` or None.
        synonyms: ``tnops.SynonymTable`` over the same V tokens, or None (no hard correction).
        prediction: ``"argmax"`` (ties → lowest id) or ``"sample"``.
        temperature: > 0, divides the logits before sampling.
        disallow_correct: never predict the gold token.
        seed: Philox seed of the samples; None draws one from torch's default generator.
        sr_weight: weight of soft regularization (0 disables it).
        sr_embedding: ``[V, E']`` table for SR; defaults to ``weight``.
        ignore_index: label of rows that are not masked.
        reduction: ``"mean"`` (CE over kept rows, SR over masked rows), ``"sum"`` or ``"none"`` (``[*]``).
        row_ids: int ``[*]`` in ``[0, 2^32)``, the Philox row key of each row (default: its flat index). Give
            global positions (e.g. ``sequence_index * L + position``) so data-parallel ranks or gradient-
            accumulation steps draw exactly the samples one big batch would.
    Returns:
        ``MLMLossOutput(loss, mlm_loss, sr_loss, predictions [*], corrected [*])``, losses in float32.
    """
    check.tensor("hidden", hidden, floating=True, min_ndim=1)
    check.tensor("weight", weight, floating=True, ndim=2)
    check.tensor("labels", labels, floating=False)
    if hidden.shape[-1] == 0:
        raise ValueError(f"hidden: expected [*, E] with E >= 1, got shape {tuple(hidden.shape)}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight: expected [V, E={hidden.shape[-1]}] to match hidden [*, E], got {tuple(weight.shape)}")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"labels: expected shape {tuple(hidden.shape[:-1])} (hidden's leading shape), got {tuple(labels.shape)}")
    vocab_size = weight.shape[0]
    if bias is not None:
        check.tensor("bias", bias, floating=True, ndim=1)
        if bias.shape[0] != vocab_size:
            raise ValueError(f"bias: expected shape ({vocab_size},) to match weight [V, E], got {tuple(bias.shape)}")
    if sr_embedding is not None:
        check.sr_table("sr_embedding", sr_embedding, vocab_size)
    check.same_device(hidden=hidden, weight=weight, labels=labels, bias=bias, sr_embedding=sr_embedding)
    check.mlm_options(vocab_size=vocab_size, synonyms=synonyms, prediction=prediction, temperature=temperature,
                      disallow_correct=disallow_correct, seed=seed, sr_weight=sr_weight, ignore_index=ignore_index,
                      reduction=reduction)
    check.label_range("labels", labels, vocab_size, ignore_index)
    check.row_ids(row_ids, labels)
    dtype = check.common_dtype(hidden, weight, bias)
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    return _dispatch(hidden, weight, bias, labels, synonyms=synonyms, prediction=prediction, temperature=temperature,
                     disallow_correct=disallow_correct, seed=seed, sr_weight=sr_weight,
                     sr_embedding=weight if sr_embedding is None else sr_embedding, ignore_index=ignore_index,
                     reduction=reduction, row_ids=row_ids)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, *, synonyms=None, prediction: str = "argmax",
             temperature: float = 1.0, disallow_correct: bool = False, seed: int | None = None, sr_weight: float = 0.0,
             sr_embedding: torch.Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
             row_ids: torch.Tensor | None = None) -> MLMLossOutput:
    """``linear_mlm_loss`` for logits that already exist.

    Args:
        logits: float ``[*, V]``.
        labels: int ``[*]``.
        sr_embedding: ``[V, E]``; required when ``sr_weight > 0`` (there is no LM-head weight to default to).
        other keywords: as ``linear_mlm_loss``.
    Returns:
        ``MLMLossOutput``; the gradient flows to ``logits`` (and ``sr_embedding``).
    """
    check.tensor("logits", logits, floating=True, min_ndim=1)
    check.tensor("labels", labels, floating=False)
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels: expected shape {tuple(logits.shape[:-1])} (logits' leading shape), got {tuple(labels.shape)}")
    vocab_size = logits.shape[-1]
    check.mlm_options(vocab_size=vocab_size, synonyms=synonyms, prediction=prediction, temperature=temperature,
                      disallow_correct=disallow_correct, seed=seed, sr_weight=sr_weight, ignore_index=ignore_index,
                      reduction=reduction)
    if sr_weight and sr_embedding is None:
        raise ValueError("sr_embedding: sr_weight > 0 needs an embedding table [V, E] (mlm_loss has no LM-head weight)")
    if sr_embedding is not None:
        check.sr_table("sr_embedding", sr_embedding, vocab_size)
    check.same_device(logits=logits, labels=labels, sr_embedding=sr_embedding)
    check.label_range("labels", labels, vocab_size, ignore_index)
    check.row_ids(row_ids, labels)
    return _dispatch(logits, None, None, labels, synonyms=synonyms, prediction=prediction, temperature=temperature,
                     disallow_correct=disallow_correct, seed=seed, sr_weight=sr_weight, sr_embedding=sr_embedding,
                     ignore_index=ignore_index, reduction=reduction, row_ids=row_ids)


def _dispatch(inputs, weight, bias, labels, *, synonyms, prediction, seed, sr_weight, sr_embedding, ignore_index,
              reduction, row_ids, **options) -> MLMLossOutput:
    if prediction == "sample" and seed is None:
        # int(tensor) would break a compiled graph; the custom op takes the seed as a tensor instead
        seed = torch.randint(0, 2**62, (), dtype=torch.int64) if torch.compiler.is_compiling() else tn_random.draw_seed()
    elif seed is not None:
        seed = check.seed_value(seed)  # a Python int in [0, 2^64) for every backend (numpy ints, negatives)
    backend = backends.select_backend(inputs.device)
    if backend == "reference":
        common = dict(synonyms=synonyms, prediction=prediction, seed=seed, sr_weight=sr_weight, sr_embedding=sr_embedding,
                      ignore_index=ignore_index, reduction=reduction, row_ids=row_ids, **options)
        if weight is None:
            return reference.mlm_loss(inputs, labels, **common)
        return reference.linear_mlm_loss(inputs, weight, labels, bias=bias, **common)
    lead = labels.shape
    flat_inputs = inputs.reshape(-1, inputs.shape[-1])
    flat_labels = labels.reshape(-1).long().contiguous()
    table = None if synonyms is None else synonyms.to(inputs.device)
    seed = 0 if seed is None else seed  # argmax ignores it
    flat_row_ids = None if row_ids is None else row_ids.reshape(-1).long().contiguous()
    sr = None
    if torch.compiler.is_compiling():  # opaque custom ops keep the graph whole (tnops/custom_ops.py)
        ce, predictions, corrected = _custom_op_rows(flat_inputs, weight, bias, flat_labels, table, flat_row_ids,
                                                     seed=seed, prediction=prediction, ignore_index=ignore_index,
                                                     reduction=reduction, backend=backend, **options)
    elif backend == "triton" and weight is not None:  # SR is fused into the kernels too
        ce, sr, predictions, corrected = _fused_head(flat_inputs, weight, bias, flat_labels, table, flat_row_ids,
                                                     seed=seed, prediction=prediction,
                                                     sr_embedding=sr_embedding if sr_weight else None,
                                                     ignore_index=ignore_index, reduction=reduction, **options)
    else:  # the chunked torch path; also serves mlm_loss, whose logits already exist
        opts = torch_chunked.MLMOptions(synonyms=table, prediction=prediction, seed=seed, ignore_index=ignore_index,
                                        reduction=reduction, **options)
        ce, predictions, corrected = torch_chunked.linear_cross_entropy(flat_inputs, weight, bias, flat_labels, opts,
                                                                         row_ids=flat_row_ids)
    if sr is None and sr_weight:
        sr = reference.sr_loss(sr_embedding, flat_labels, predictions, ignore_index=ignore_index, reduction=reduction)
    predictions, corrected = predictions.reshape(lead), corrected.reshape(lead)
    if reduction == "none":
        ce = ce.reshape(lead)
        sr = None if sr is None else sr.reshape(lead)
    sr = torch.zeros_like(ce) if sr is None else sr
    return MLMLossOutput(ce + sr_weight * sr, ce, sr, predictions, corrected)


def _fused_head(hidden, weight, bias, labels, table, row_ids, *, sr_embedding, ignore_index, reduction, **options):
    """The Triton path: per-row CE and SR from one fused pass, reduced here with plain tensor ops."""
    from tnops.ops.mlm_head_launch import FusedMLMHead

    offsets, syn_ids = (None, None) if table is None else (table.offsets, table.ids)
    options = dict(options, ignore_index=ignore_index)
    ce_rows, sr_rows, predictions, corrected = FusedMLMHead.apply(hidden, weight, bias, sr_embedding, labels, row_ids,
                                                                  offsets, syn_ids, options, None)
    masked = labels != ignore_index
    ce = reference.reduce_rows(ce_rows, masked & ~corrected, reduction)
    sr = None if sr_embedding is None else reference.reduce_rows(sr_rows, masked, reduction)
    return ce, sr, predictions, corrected


def _custom_op_rows(hidden, weight, bias, labels, table, row_ids, *, seed, prediction, temperature, disallow_correct,
                    ignore_index, reduction, backend):
    from tnops import custom_ops

    offsets, syn_ids = (None, None) if table is None else (table.offsets, table.ids)
    if not isinstance(seed, torch.Tensor):  # the op takes the 64-bit seed as its signed int64 bit pattern
        seed = torch.tensor(seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64)
    op_backend = "triton" if backend == "triton" and weight is not None else "torch"
    ce_rows, _, predictions, corrected = custom_ops.mlm_rows(hidden, weight, bias, labels, row_ids, offsets, syn_ids,
                                                             seed, prediction, float(temperature), disallow_correct,
                                                             ignore_index, op_backend)
    kept = (labels != ignore_index) & ~corrected
    return reference.reduce_rows(ce_rows, kept, reduction), predictions, corrected


def sr_loss(embedding: torch.Tensor, gold_ids: torch.Tensor, pred_ids: torch.Tensor, *, ignore_index: int = -100,
            reduction: str = "mean") -> torch.Tensor:
    """Soft regularization ``1 - cos(embedding[gold], embedding[pred])``, averaged over rows with a gold id.

    Args:
        embedding: float ``[V, E]``.
        gold_ids: int ``[*]`` in ``[0, V)`` or ``ignore_index``.
        pred_ids: int ``[*]`` in ``[0, V)`` (ignored where gold is ``ignore_index``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[*]``).
    Returns:
        float32 scalar (``[*]`` for ``"none"``); gradients reach both embedding rows.
    """
    check.sr_table("embedding", embedding, embedding.shape[0] if isinstance(embedding, torch.Tensor) else 0)
    check.tensor("gold_ids", gold_ids, floating=False)
    check.tensor("pred_ids", pred_ids, floating=False)
    if gold_ids.shape != pred_ids.shape:
        raise ValueError(f"pred_ids: expected the shape of gold_ids {tuple(gold_ids.shape)}, got {tuple(pred_ids.shape)}")
    check.integer("ignore_index", ignore_index)
    check.choice("reduction", reduction, check.REDUCTIONS)
    check.same_device(embedding=embedding, gold_ids=gold_ids, pred_ids=pred_ids)
    check.label_range("gold_ids", gold_ids, embedding.shape[0], ignore_index)
    # a prediction is a real id on every gold row: ignore_index there is an error, not a skip
    check.id_range("pred_ids", pred_ids, embedding.shape[0], where=gold_ids != ignore_index)
    return reference.sr_loss(embedding, gold_ids, pred_ids, ignore_index=ignore_index, reduction=reduction)


def rtd_loss(disc_logits: torch.Tensor, corrupted_ids: torch.Tensor, original_ids: torch.Tensor,
             attention_mask: torch.Tensor | None = None, corrected: torch.Tensor | None = None, *,
             reduction: str = "mean") -> torch.Tensor:
    """ELECTRA's replaced-token-detection BCE, with hard-corrected positions labelled *original*.

    Args:
        disc_logits: float ``[*]`` one logit per position (e.g. ``[B, L]``).
        corrupted_ids: int ``[*]`` the generator-corrupted input.
        original_ids: int ``[*]`` the original input.
        attention_mask: ``[*]`` 1 for real tokens, 0 for padding; None means all positions count.
        corrected: bool ``[*]`` positions whose replacement is a synonym of the original; None for none.
        reduction: ``"mean"`` (over real tokens), ``"sum"`` or ``"none"``.
    Returns:
        float32 scalar (``[*]`` for ``"none"``).
    """
    check.tensor("disc_logits", disc_logits, floating=True)
    shape = tuple(disc_logits.shape)
    for name, value in (("corrupted_ids", corrupted_ids), ("original_ids", original_ids)):
        check.tensor(name, value, floating=False)
    for name, value in (("corrupted_ids", corrupted_ids), ("original_ids", original_ids),
                        ("attention_mask", attention_mask), ("corrected", corrected)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"{name}: expected the shape of disc_logits {shape}, got {tuple(value.shape)}")
    if corrected is not None and corrected.dtype != torch.bool:
        raise TypeError(f"corrected: expected a bool tensor, got {corrected.dtype}")
    check.choice("reduction", reduction, check.REDUCTIONS)
    check.same_device(disc_logits=disc_logits, corrupted_ids=corrupted_ids, original_ids=original_ids,
                      attention_mask=attention_mask, corrected=corrected)
    if backends.select_backend(disc_logits.device) != "triton":
        return reference.rtd_loss(disc_logits, corrupted_ids, original_ids, attention_mask, corrected,
                                  reduction=reduction)
    from tnops.ops.rtd import FusedRTD

    flat = lambda t: None if t is None else t.reshape(-1).contiguous()
    per_pos = FusedRTD.apply(flat(disc_logits), flat(corrupted_ids), flat(original_ids), flat(attention_mask),
                             flat(corrected))
    valid = torch.ones_like(per_pos, dtype=torch.bool) if attention_mask is None else flat(attention_mask) != 0
    return reference.reduce_rows(per_pos.reshape(shape), valid.reshape(shape), reduction)


def sentence_sr_loss(hidden_corrupted: torch.Tensor, hidden_original: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sentence-level SR ``KL(softmax(H_p) || softmax(H_s))`` over the hidden dimension, mean over real tokens.

    Args:
        hidden_corrupted: float ``[*, H]`` discriminator states of the corrupted sequence.
        hidden_original: float ``[*, H]`` states of the original sequence.
        attention_mask: ``[*]`` or None.
    Returns:
        float32 scalar.
    """
    check.tensor("hidden_corrupted", hidden_corrupted, floating=True, min_ndim=1)
    check.tensor("hidden_original", hidden_original, floating=True, min_ndim=1)
    if hidden_original.shape != hidden_corrupted.shape:
        raise ValueError(f"hidden_original: expected the shape of hidden_corrupted {tuple(hidden_corrupted.shape)}, "
                         f"got {tuple(hidden_original.shape)}")
    if attention_mask is not None:
        check.tensor("attention_mask", attention_mask)
        if tuple(attention_mask.shape) != tuple(hidden_corrupted.shape[:-1]):
            raise ValueError(f"attention_mask: expected shape {tuple(hidden_corrupted.shape[:-1])}, got {tuple(attention_mask.shape)}")
    check.same_device(hidden_corrupted=hidden_corrupted, hidden_original=hidden_original, attention_mask=attention_mask)
    return reference.sentence_sr_loss(hidden_corrupted, hidden_original, attention_mask)
