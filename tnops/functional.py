"""The public losses: argument checks, one ``MLMOptions``, then the ``tnops::`` custom ops (``tnops/_ops.py``).

No backend is named here: ``tnops.backends.select`` picks one by device, ``TNOPS_BACKEND`` or ``backend=``.
Shapes follow ``torch.nn.functional.cross_entropy`` with a leading-shape twist: ``hidden [*, E]`` with
``labels [*]`` (e.g. ``[B, L, E]`` with ``[B, L]``), outputs per row have the shape ``[*]``.
"""
from __future__ import annotations

import torch

from tnops import _ops, backends, losses
from tnops import random as tn_random
from tnops import validation as check
from tnops.options import MLMOptions
from tnops.outputs import MLMLossOutput


def linear_mlm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                    bias: torch.Tensor | None = None, synonyms=None, prediction: str = "argmax",
                    temperature: float = 1.0, disallow_correct: bool = False, seed: int | None = None,
                    sr_weight: float = 0.0, sr_embedding: torch.Tensor | None = None, ignore_index: int = -100,
                    reduction: str = "mean", row_ids: torch.Tensor | None = None,
                    backend: str | None = None, label_smoothing: float = 0.0, z_loss: float = 0.0,
                    process_group=None) -> MLMLossOutput:
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
        backend: ``"reference"``, ``"torch"``, ``"triton"``, ... (``tnops.backends.available_backends()``);
            None: ``TNOPS_BACKEND``, else the fastest one for the device.
        label_smoothing: ε in ``[0, 1)``: a kept row's CE is ``(1 - ε)·(lse - z_gold) + ε·(lse - mean_v z_v)``,
            ``F.cross_entropy(label_smoothing=ε)``'s definition.
        z_loss: λ >= 0: adds ``λ·lse²`` per kept row, reduced like the CE (PaLM's auxiliary loss).
        process_group: a ``torch.distributed`` group over which the vocabulary is sharded: ``weight [V_k, E]`` and
            ``bias [V_k]`` hold this rank's contiguous block of rows (blocks in rank order, any sizes);
            ``sr_embedding`` is sharded alike or the full ``[V, E']`` table; ``hidden``, ``labels`` (global ids),
            ``row_ids``, ``seed`` and ``synonyms`` (global) are the same on every rank, and every rank returns
            what one process returns for the concatenated weight (``tnops.distributed``; eager; the native
            kernels on CPU where built, else the torch backend's maths; ``backend`` may name either).
    Returns:
        ``MLMLossOutput(loss, mlm_loss, sr_loss, predictions [*], corrected [*], z_loss)``, losses in float32
        (float64 for float64 inputs).
    """
    check.tensor("hidden", hidden, floating=True, min_ndim=1)
    check.tensor("weight", weight, floating=True, ndim=2)
    check.tensor("labels", labels, floating=False)
    if hidden.shape[-1] == 0:
        raise ValueError(f"hidden: expected [*, E] with E >= 1, got shape {tuple(hidden.shape)}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight: expected [V, E={hidden.shape[-1]}] to match hidden [*, E], got "
                         f"{tuple(weight.shape)}")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"labels: expected shape {tuple(hidden.shape[:-1])} (hidden's leading shape), got "
                         f"{tuple(labels.shape)}")
    vocab_size = weight.shape[0]
    if _is_dtensor(weight):  # vocabulary-sharded by a device mesh: its local block and the mesh's group
        from tnops import distributed

        process_group, weight, bias, sr_embedding = distributed.from_dtensors(weight, bias, sr_embedding,
                                                                              process_group)
    if process_group is not None:
        return _vocab_parallel(hidden, weight, labels, bias, synonyms, sr_embedding, row_ids, backend, process_group,
                               prediction=prediction, temperature=temperature, disallow_correct=disallow_correct,
                               seed=seed, sr_weight=sr_weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing, z_loss=z_loss)
    if bias is not None:
        check.tensor("bias", bias, floating=True, ndim=1)
        if bias.shape[0] != vocab_size:
            raise ValueError(f"bias: expected shape ({vocab_size},) to match weight [V, E], got {tuple(bias.shape)}")
    if sr_embedding is not None:
        check.sr_table("sr_embedding", sr_embedding, vocab_size)
    check.same_device(hidden=hidden, weight=weight, labels=labels, bias=bias, sr_embedding=sr_embedding)
    options = _options(vocab_size, synonyms, prediction=prediction, temperature=temperature,
                       disallow_correct=disallow_correct, seed=seed, sr_weight=sr_weight, ignore_index=ignore_index,
                       reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss)
    check.label_range("labels", labels, vocab_size, ignore_index)
    check.row_ids(row_ids, labels)
    dtype = check.common_dtype(hidden, weight, bias)
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    return _mlm(hidden, weight, bias, labels, synonyms, weight if sr_embedding is None else sr_embedding, options,
                row_ids, backend)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, *, synonyms=None, prediction: str = "argmax",
             temperature: float = 1.0, disallow_correct: bool = False, seed: int | None = None, sr_weight: float = 0.0,
             sr_embedding: torch.Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
             row_ids: torch.Tensor | None = None, backend: str | None = None, label_smoothing: float = 0.0,
             z_loss: float = 0.0, process_group=None) -> MLMLossOutput:
    """``linear_mlm_loss`` for logits that already exist.

    Args:
        logits: float ``[*, V]``.
        labels: int ``[*]``.
        sr_embedding: ``[V, E]``; required when ``sr_weight > 0`` (there is no LM-head weight to default to).
        process_group: the logits are vocabulary-sharded, ``[*, V_k]`` this rank's contiguous block of columns
            (blocks in rank order); the gradient is this rank's block of ``d logits`` (see ``linear_mlm_loss``).
        other keywords: as ``linear_mlm_loss``.
    Returns:
        ``MLMLossOutput``; the gradient flows to ``logits`` (and ``sr_embedding``).
    """
    check.tensor("logits", logits, floating=True, min_ndim=1)
    check.tensor("labels", labels, floating=False)
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels: expected shape {tuple(logits.shape[:-1])} (logits' leading shape), got "
                         f"{tuple(labels.shape)}")
    vocab_size = logits.shape[-1]
    if process_group is not None:
        return _vocab_parallel(logits, None, labels, None, synonyms, sr_embedding, row_ids, backend, process_group,
                               prediction=prediction, temperature=temperature, disallow_correct=disallow_correct,
                               seed=seed, sr_weight=sr_weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing, z_loss=z_loss)
    options = _options(vocab_size, synonyms, prediction=prediction, temperature=temperature,
                       disallow_correct=disallow_correct, seed=seed, sr_weight=sr_weight, ignore_index=ignore_index,
                       reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss)
    if sr_weight and sr_embedding is None:
        raise ValueError("sr_embedding: sr_weight > 0 needs an embedding table [V, E] (mlm_loss has no LM-head weight)")
    if sr_embedding is not None:
        check.sr_table("sr_embedding", sr_embedding, vocab_size)
    check.same_device(logits=logits, labels=labels, sr_embedding=sr_embedding)
    check.label_range("labels", labels, vocab_size, ignore_index)
    check.row_ids(row_ids, labels)
    return _mlm(logits, None, None, labels, synonyms, sr_embedding, options, row_ids, backend)


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor" and type(t).__module__.startswith("torch.distributed")


def _vocab_parallel(hidden, weight, labels, bias, synonyms, sr_embedding, row_ids, backend, group,
                    **keywords) -> MLMLossOutput:
    """``linear_mlm_loss`` over a vocabulary-sharded head (``tnops.distributed``): this rank's checks, then the
    cross-rank ones."""
    from tnops import distributed

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("process_group: torch.distributed is not initialised (init_process_group first)")
    rows = hidden.shape[-1] if weight is None else weight.shape[0]  # weight None: hidden is [*, V_k] logits
    if bias is not None:
        check.tensor("bias", bias, floating=True, ndim=1)
        if bias.shape[0] != rows:
            raise ValueError(f"bias: expected shape ({rows},) to match this rank's weight block [V_k, E], got "
                             f"{tuple(bias.shape)}")
    start, vocab = distributed.shard_layout(rows, group)
    options = _options(vocab, synonyms, **keywords)
    if sr_embedding is not None:
        check.tensor("sr_embedding", sr_embedding, floating=True, ndim=2)
        if sr_embedding.shape[0] not in (rows, vocab):
            raise ValueError(f"sr_embedding: expected this rank's block [V_k={rows}, E'] or the full table "
                             f"[V={vocab}, E'], got shape {tuple(sr_embedding.shape)}")
    if weight is None and options.sr_weight and sr_embedding is None:
        raise ValueError("sr_embedding: sr_weight > 0 needs an embedding table (this rank's block [V_k, E'] or the "
                         "full [V, E']); mlm_loss has no LM-head weight")
    check.same_device(hidden=hidden, weight=weight, labels=labels, bias=bias, sr_embedding=sr_embedding)
    check.row_ids(row_ids, labels)
    return distributed.vocab_parallel_mlm(hidden, weight, bias, labels, synonyms,
                                          weight if sr_embedding is None else sr_embedding, options, row_ids, group,
                                          backend)


def _options(vocab_size: int, synonyms, **keywords) -> MLMOptions:
    check.mlm_options(vocab_size=vocab_size, synonyms=synonyms, **keywords)
    return MLMOptions(**keywords)


def _mlm(inputs, weight, bias, labels, synonyms, sr_embedding, options: MLMOptions, row_ids, backend) -> MLMLossOutput:
    """Select a backend, run ``tnops::mlm_head`` over the flattened rows, compute ``kept`` once and reduce."""
    check.no_functorch_transform()
    name = backends.select(inputs.device, inputs.dtype, backend)
    lead = labels.shape
    flat_inputs = inputs.reshape(-1, inputs.shape[-1])
    flat_labels = labels.reshape(-1).long()
    flat_row_ids = None if row_ids is None else row_ids.reshape(-1).long()
    table = None if synonyms is None else synonyms.csr_view(inputs.device)
    seed = _seed_tensor(options)
    sr_table = sr_embedding if options.sr_weight else None
    fuse = options.reduction != "none" and torch.is_grad_enabled()
    want = tuple(fuse and t is not None and t.requires_grad for t in (flat_inputs, weight, bias))
    coefficients = options.row_coefficients()
    nll, lse, zmean, total, predictions, corrected, sr_rows, *_ = _ops.mlm_head(
        flat_inputs, weight, bias, flat_labels, flat_row_ids, *(table if table is not None else (None,) * 3),
        sr_table, seed, *options.op_args(), name, *want, list(coefficients))
    masked = flat_labels != options.ignore_index
    kept = masked & ~corrected  # the masked set comes from the labels alone, never from the predictions
    ce_coefficients = (1.0, 0.0) + coefficients[2:]  # the objective without its lse² term: the (smoothed) CE
    if options.reduction == "none":  # never fused: every statistic carries its gradient
        ce = _ops.objective_rows(nll, lse, zmean, kept, ce_coefficients)
        z = torch.where(kept, options.z_loss * lse * lse, 0) if options.z_loss else torch.zeros_like(ce)
        main = ce + z
    else:
        # the op's Σ over kept rows is the one output that carries the fused gradients (tnops/_ops.py)
        main = losses.reduce_sum(total, kept, options.reduction)
        if options.z_loss:  # the parts of a one-gradient objective are reported values
            with torch.no_grad():
                ce = losses.reduce_rows(_ops.objective_rows(nll, lse, zmean, kept, ce_coefficients), kept,
                                        options.reduction)
                z = losses.reduce_rows(torch.where(kept, options.z_loss * lse * lse, 0), kept, options.reduction)
        else:
            ce, z = main, torch.zeros_like(main)
    sr = losses.reduce_rows(sr_rows, masked, options.reduction) if sr_table is not None else torch.zeros_like(ce)
    if options.reduction == "none":
        main, ce, sr, z = main.reshape(lead), ce.reshape(lead), sr.reshape(lead), z.reshape(lead)
    return MLMLossOutput(main + options.sr_weight * sr, ce, sr, predictions.reshape(lead), corrected.reshape(lead),
                         z)


def _seed_tensor(options: MLMOptions) -> torch.Tensor:
    """The Philox seed as the int64 tensor the custom op takes (its 64 bits, signed).  ``seed=None`` draws one
    from torch's default generator by one rule, eager and compiled alike (``tnops.random.draw_seed_tensor``)."""
    if options.prediction != "sample":
        return torch.zeros((), dtype=torch.int64)
    if options.seed is None:
        return tn_random.draw_seed_tensor()  # a tensor: int() of it would break a compiled graph
    seed = options.seed
    return torch.tensor(seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64)


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
        raise ValueError(f"pred_ids: expected the shape of gold_ids {tuple(gold_ids.shape)}, got "
                         f"{tuple(pred_ids.shape)}")
    check.integer("ignore_index", ignore_index, int64=True)
    check.choice("reduction", reduction, check.REDUCTIONS)
    check.same_device(embedding=embedding, gold_ids=gold_ids, pred_ids=pred_ids)
    check.label_range("gold_ids", gold_ids, embedding.shape[0], ignore_index)
    # a prediction is a real id on every gold row: ignore_index there is an error, not a skip
    check.id_range("pred_ids", pred_ids, embedding.shape[0], where=gold_ids != ignore_index)
    check.no_functorch_transform()
    valid = gold_ids != ignore_index
    rows = _ops.sr_rows(embedding, gold_ids.reshape(-1).long(), pred_ids.reshape(-1).long(), valid.reshape(-1))
    return losses.reduce_rows(rows.reshape(gold_ids.shape), valid, reduction)


def rtd_loss(disc_logits: torch.Tensor, corrupted_ids: torch.Tensor, original_ids: torch.Tensor,
             attention_mask: torch.Tensor | None = None, corrected: torch.Tensor | None = None, *,
             reduction: str = "mean", backend: str | None = None) -> torch.Tensor:
    """ELECTRA's replaced-token-detection BCE, with hard-corrected positions labelled *original*.

    Args:
        disc_logits: float ``[*]`` one logit per position (e.g. ``[B, L]``).
        corrupted_ids: int ``[*]`` the generator-corrupted input.
        original_ids: int ``[*]`` the original input.
        attention_mask: ``[*]`` 1 for real tokens, 0 for padding; None means all positions count.
        corrected: bool ``[*]`` positions whose replacement is a synonym of the original; None for none.
        reduction: ``"mean"`` (over real tokens), ``"sum"`` or ``"none"``.
        backend: as ``linear_mlm_loss``.
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
    check.no_functorch_transform()
    name = backends.select(disc_logits.device, disc_logits.dtype, backend)
    flat = lambda t: None if t is None else t.reshape(-1)  # noqa: E731
    per_pos, _ = _ops.rtd_rows(flat(disc_logits), flat(corrupted_ids), flat(original_ids), flat(attention_mask),
                               flat(corrected), name)
    valid = torch.ones(shape, dtype=torch.bool, device=disc_logits.device) if attention_mask is None \
        else attention_mask != 0
    return losses.reduce_rows(per_pos.reshape(shape), valid, reduction)


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
            raise ValueError(f"attention_mask: expected shape {tuple(hidden_corrupted.shape[:-1])}, got "
                             f"{tuple(attention_mask.shape)}")
    check.same_device(hidden_corrupted=hidden_corrupted, hidden_original=hidden_original, attention_mask=attention_mask)
    return losses.sentence_sr_loss(hidden_corrupted, hidden_original, attention_mask)
