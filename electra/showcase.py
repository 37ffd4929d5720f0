"""Hard correction made visible: the paper's Figure-3-style examples of corrected predictions.

A corrected position is a masked token whose prediction is a listed synonym of the gold token; printed as

    corrected  primary → main      … the [primary] reason for the change …   (listed: chief, main, master, …)

``collect_examples`` picks such positions from a batch (at most one per distinct gold → prediction pair, so a
handful of lines shows variety), ``format_example`` renders one.  Used at the end of ``electra-pretrain`` and by
``electra-fn-stats --examples`` and ``examples/hf_trainer_mlm.py``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["CorrectionExample", "collect_examples", "format_example"]

CONTEXT_TOKENS = 8  # tokens shown on each side of the corrected position
SYNONYMS_SHOWN = 6


@dataclass
class CorrectionExample:
    """One corrected prediction: ``context`` has the gold word in brackets; ``synonyms`` the gold token's list."""

    gold: str
    prediction: str
    context: str
    synonyms: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _word(tokenizer, token_id: int) -> str:
    return tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(int(token_id))]).strip()


def _context(tokenizer, ids: list[int], position: int, window: int) -> str:
    special = set(tokenizer.all_special_ids)
    left = [i for i in ids[max(0, position - window):position] if i not in special]
    right = [i for i in ids[position + 1:position + 1 + window] if i not in special]
    text = lambda part: tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(part)).strip()  # noqa: E731
    return " ".join(p for p in (text(left), f"[{_word(tokenizer, ids[position])}]", text(right)) if p)


def collect_examples(tokenizer, synonyms, input_ids: torch.Tensor, positions: torch.Tensor, predictions: torch.Tensor,
                     corrected: torch.Tensor, *, limit: int = 5, seen: set | None = None,
                     window: int = CONTEXT_TOKENS) -> list[CorrectionExample]:
    """Corrected positions of a batch as ``CorrectionExample``s, one per new (gold, prediction) pair.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        synonyms: the ``tnops.SynonymTable`` that corrected them.
        input_ids: int ``[B, L]`` original (unmasked) sequences.
        positions: int ``[B, P]`` the masked positions of each sequence.
        predictions: int ``[B, P]`` the generator's prediction at each position.
        corrected: bool ``[B, P]`` positions hard correction dropped.
        limit: at most this many examples.
        seen: (gold, prediction) pairs already shown (updated in place), to collect across batches.
    Returns:
        Up to ``limit`` examples, in batch order.
    """
    seen = set() if seen is None else seen
    found = []
    rows, slots = corrected.nonzero(as_tuple=True)
    for row, slot in zip(rows.tolist(), slots.tolist()):
        if len(found) >= limit:
            break
        position = int(positions[row, slot])
        ids = input_ids[row].tolist()
        gold, pred = ids[position], int(predictions[row, slot])
        if (gold, pred) in seen:
            continue
        seen.add((gold, pred))
        listed = [_word(tokenizer, t) for t in synonyms.synonyms(gold)]
        shown = [w for w in listed if w != _word(tokenizer, pred)][:SYNONYMS_SHOWN - 1]
        found.append(CorrectionExample(_word(tokenizer, gold), _word(tokenizer, pred),
                                       _context(tokenizer, ids, position, window),
                                       [_word(tokenizer, pred)] + shown + (["…"] if len(listed) > len(shown) + 1
                                                                           else [])))
    return found


def format_example(example: CorrectionExample) -> str:
    """One line: ``gold → prediction``, the context with the gold word bracketed, the gold token's synonyms."""
    pair = f"{example.gold} → {example.prediction}"
    return f"  {pair:<24} … {example.context} …   (listed: {', '.join(example.synonyms)})"
