"""Per-batch pieces of the held-out evaluation (``electra.eval``): masking and sampling one batch as pre-training
does, the discriminator's inputs and labels, the MLM counts, and the RTD scores over the pass."""
from __future__ import annotations

import torch

import tnops
from electra.masking import IGNORE_INDEX, mask_tokens
from electra.metrics import accuracy, binary_auc
from electra.seeds import derive_seed

__all__ = ["corrupt_batch", "masked_head", "masked_lm_counts", "replaced_token_labels", "rtd_scores"]


# ------------------------------------------------------------------------------------ counting, per batch
def masked_lm_counts(predictions: torch.Tensor, gold: torch.Tensor, valid: torch.Tensor, synonyms) -> torch.Tensor:
    """``[masked, correct, correct or a listed synonym]`` (int64 ``[3]``, on the inputs' device) over the rows
    where ``valid``.

    Args:
        predictions, gold: int ``[B, P]`` predicted and gold token ids; valid: bool ``[B, P]`` (masked rows).
        synonyms: a ``tnops.SynonymTable`` (``is_synonym(gold, prediction)`` credits a listed synonym).
    """
    right = (predictions == gold) & valid
    credited = right | (synonyms.is_synonym(gold, predictions) & valid)
    return torch.stack([valid.sum(), right.sum(), credited.sum()])


def replaced_token_labels(input_ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                          samples: torch.Tensor, corrected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and labels, as :class:`electra.modeling.ElectraTNForPretraining` makes them.

    Args:
        input_ids: int ``[B, L]`` original tokens; positions: int64 ``[B, P]`` and valid: bool ``[B, P]``
            (:func:`electra.masking.mask_tokens`); samples: int ``[B, P]`` the generator's samples at ``positions``;
            corrected: bool ``[B, P]`` rows hard correction relabels (a sampled listed synonym; all False without).
    Returns:
        ``(corrupted [B, L], labels bool [B, L])``: the masked positions hold the samples; a token is labelled
        replaced iff it differs from the original and was not corrected.
    """
    gold = input_ids.gather(1, positions)
    corrupted = input_ids.scatter(1, positions, torch.where(valid, samples, gold))
    relabelled = torch.zeros_like(input_ids, dtype=torch.bool).scatter(1, positions, corrected & valid)
    return corrupted, (corrupted != input_ids) & ~relabelled


def masked_head(generator, batch, tokenizer, *, seed: int, max_predictions: int):
    """Mask ``batch`` as pre-training does and run the generator up to its LM head, at the masked positions only.

    Args:
        generator: ``ElectraForMaskedLM``; batch: an :class:`electra.batches.Batch` on its device; seed: the model
            seed (streams ``mask-select``, ``mask-keep``); max_predictions: P.
    Returns:
        ``(head [B, P, E], gold, positions, valid, row_ids)``: the LM head's input, the gold ids (int ``[B, P]``),
        the masked positions (int64 ``[B, P]``), which of them are real (bool ``[B, P]``) and pre-training's Philox
        row keys (int64 ``[B, P]``: global sequence index · L + position).
    """
    length = batch.input_ids.shape[1]
    special = sorted({i for i in tokenizer.all_special_ids if i is not None})
    masked = mask_tokens(batch.input_ids, batch.attention_mask, special_token_ids=special,
                         mask_token_id=tokenizer.mask_token_id, seed=seed, sequence_offset=batch.global_offset,
                         max_predictions=max_predictions)
    states = generator.electra(masked.input_ids, attention_mask=batch.attention_mask,
                               token_type_ids=batch.token_type_ids).last_hidden_state
    positions, valid = masked.positions, masked.valid
    head = generator.generator_predictions(states.gather(1, positions[..., None].expand(-1, -1, states.shape[-1])))
    gold = batch.input_ids.gather(1, positions)
    sequences = torch.arange(batch.global_offset, batch.global_offset + len(gold), device=gold.device)
    return head, gold, positions, valid, sequences[:, None] * length + positions


def corrupt_batch(generator, batch, tokenizer, synonyms, run: dict, *, seed: int, max_predictions: int) -> dict:
    """One held-out batch through the generator, masked and sampled as pre-training does.

    Args:
        generator: ``ElectraForMaskedLM``; batch: an :class:`electra.batches.Batch` on its device.
        synonyms: ``tnops.SynonymTable`` on the device; run: ``{"hc": bool, "temperature": float}``.
        seed: the model seed (streams ``mask-select``, ``mask-keep``, ``sampling``); max_predictions: P.
    Returns:
        dict of tensors: ``gold``, ``argmax`` (int ``[B, P]``), ``valid`` (bool ``[B, P]``), ``corrupted``
        (int ``[B, L]``, the samples written in) and ``labels`` (bool ``[B, L]``, the discriminator's targets).
    """
    head, gold, positions, valid, row_ids = masked_head(generator, batch, tokenizer, seed=seed,
                                                        max_predictions=max_predictions)
    head_args = (head, generator.generator_lm_head.weight, torch.where(valid, gold, IGNORE_INDEX))
    common = dict(bias=generator.generator_lm_head.bias, ignore_index=IGNORE_INDEX, row_ids=row_ids)
    best = tnops.linear_mlm_loss(*head_args, prediction="argmax", **common).predictions
    # pre-training's samples: the same stream and row keys, hard correction as the run had it
    sampled = tnops.linear_mlm_loss(*head_args, prediction="sample", synonyms=synonyms if run["hc"] else None,
                                    temperature=run["temperature"], seed=derive_seed("sampling", seed), **common)
    corrupted, labels = replaced_token_labels(batch.input_ids, positions, valid, sampled.predictions,
                                              sampled.corrected)
    return {"gold": gold, "argmax": best, "valid": valid, "corrupted": corrupted, "labels": labels}


def rtd_scores(logits: torch.Tensor, labels: torch.Tensor, synonym_rows: torch.Tensor) -> tuple[dict, dict]:
    """``({rtd_accuracy, rtd_auc, rtd_synonym_original}, reasons)`` over N tokens.

    Args:
        logits: float ``[N]`` discriminator logits (> 0: replaced); labels: bool ``[N]`` (True: replaced);
        synonym_rows: bool ``[N]`` tokens replaced by a listed synonym of the original.
    Returns:
        the scores (None where undefined) and ``{key: reason}`` for each None.
    """
    scores, reasons = {"rtd_accuracy": accuracy(logits > 0, labels), "rtd_auc": None, "rtd_synonym_original": None}, {}
    try:
        scores["rtd_auc"] = binary_auc(logits, labels)
    except ValueError:
        reasons["rtd_auc"] = (f"all {len(labels)} tokens are labelled {'replaced' if bool(labels[0]) else 'original'}"
                              "; the AUC needs both classes")
    if bool(synonym_rows.any()):
        scores["rtd_synonym_original"] = float((logits[synonym_rows] <= 0).double().mean())
    else:
        reasons["rtd_synonym_original"] = "no replacement was a listed synonym of its gold token"
    return scores, reasons
