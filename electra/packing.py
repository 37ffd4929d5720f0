"""ELECTRA's example packing: tokenized documents -> ``[CLS] A [SEP] B [SEP]`` rows of a fixed length.

Packing follows google-research/electra's ``build_pretraining_dataset.py`` (ExampleBuilder): the
sentences of a document accumulate until they reach the target length (``max_seq_length``, or with
probability 0.05 a random length in [5, max_seq_length] for the next example); the example is then
``[CLS] A [SEP] B [SEP]`` with the split at a sentence boundary (A aims at (target-3)//2 tokens, a
sentence that overshoots goes to A half of the time, and with probability 0.1 everything goes to A;
as in ELECTRA, a later short sentence may still join A after B has begun), truncated to
``max_seq_length`` (A first, B gets what is left; the rest of the text is dropped) and padded.
A document's end closes the current example.  Random choices come from a ``random.Random`` seeded by
the ``packing`` stream of the run seed (:mod:`electra.seeds`), so the examples depend only on
(documents, tokenizer, seed).
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from electra.batches import check_int
from electra.seeds import derive_seed

__all__ = ["PretrainingSplit", "pack_examples"]


@dataclass
class PretrainingSplit:
    """Packed examples, stored compactly: ``input_ids`` int32, ``attention_mask`` and ``token_type_ids``
    int8, each ``[num_examples, max_seq_length]``.  Indexing returns int64 tensors."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor

    def __post_init__(self):
        shape = self.input_ids.shape
        if self.input_ids.dim() != 2 or self.attention_mask.shape != shape or self.token_type_ids.shape != shape:
            raise ValueError("PretrainingSplit: input_ids, attention_mask and token_type_ids must all be "
                             f"[num_examples, max_seq_length]; got {tuple(shape)}, "
                             f"{tuple(self.attention_mask.shape)}, {tuple(self.token_type_ids.shape)}")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __repr__(self) -> str:
        return f"PretrainingSplit(num_examples={len(self)}, max_seq_length={self.max_seq_length})"

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        """Rows ``index`` (int, slice or LongTensor [n]) -> dict of int64 tensors ``[n, L]`` (``[L]`` for an int)."""
        return {"input_ids": self.input_ids[index].long(), "attention_mask": self.attention_mask[index].long(),
                "token_type_ids": self.token_type_ids[index].long()}

    @property
    def max_seq_length(self) -> int:
        return self.input_ids.shape[1]

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens, [CLS] and [SEP] included."""
        return int(self.attention_mask.sum(dtype=torch.int64))

    def take(self, rows: torch.Tensor) -> PretrainingSplit:
        """The examples ``rows`` (LongTensor ``[n]``), in that order, stored as compactly."""
        return PretrainingSplit(self.input_ids[rows], self.attention_mask[rows], self.token_type_ids[rows])


class _ExampleBuilder:
    """ELECTRA's ExampleBuilder over token ids (see the module docstring); returns (A, B) id lists."""

    def __init__(self, max_seq_length: int, rng: random.Random):
        self.max_length = max_seq_length
        self.target_length = max_seq_length
        self.rng = rng
        self.sentences: list[list[int]] = []
        self.length = 0

    def add_sentence(self, ids: list[int]):
        if not ids:
            return None
        self.sentences.append(ids)
        self.length += len(ids)
        return self._close() if self.length >= self.target_length else None

    def end_document(self):
        return self._close() if self.length else None

    def _close(self) -> tuple[list[int], list[int]]:
        # The draw order (single-segment coin, overshoot coins, next target length) is ELECTRA's.
        first_target = 100_000 if self.rng.random() < 0.1 else (self.target_length - 3) // 2
        first: list[int] = []
        second: list[int] = []
        for sentence in self.sentences:
            if (not first or len(first) + len(sentence) < first_target
                    or (not second and len(first) < first_target and self.rng.random() < 0.5)):
                first += sentence
            else:
                second += sentence
        first = first[:self.max_length - 2]  # room for [CLS] and [SEP]
        second = second[:max(0, self.max_length - len(first) - 3)]
        self.sentences, self.length = [], 0
        self.target_length = (self.rng.randint(5, self.max_length) if self.rng.random() < 0.05
                              else self.max_length)
        return first, second


class _RowWriter:
    """Appends examples into fixed-size numpy chunks, so memory is ~6 bytes per token slot."""

    def __init__(self, max_seq_length: int, cls_id: int, sep_id: int, pad_id: int, chunk: int = 4096):
        self.length, self.cls, self.sep, self.pad, self.chunk = max_seq_length, cls_id, sep_id, pad_id, chunk
        self.done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._new_chunk()

    def _new_chunk(self):
        self.ids = np.full((self.chunk, self.length), self.pad, dtype=np.int32)
        self.mask = np.zeros((self.chunk, self.length), dtype=np.int8)
        self.types = np.zeros((self.chunk, self.length), dtype=np.int8)
        self.row = 0

    def write(self, first: list[int], second: list[int]):
        row, a, b = self.row, len(first), len(second)
        self.ids[row, 0] = self.cls
        self.ids[row, 1:1 + a] = first
        self.ids[row, 1 + a] = self.sep
        end = 2 + a
        if b:  # segment B and its closing [SEP] have token type 1
            self.ids[row, end:end + b] = second
            self.ids[row, end + b] = self.sep
            self.types[row, end:end + b + 1] = 1
            end += b + 1
        self.mask[row, :end] = 1
        self.row += 1
        if self.row == self.chunk:
            self.done.append((self.ids, self.mask, self.types))
            self._new_chunk()

    def finish(self) -> PretrainingSplit:
        parts = self.done + [(self.ids[:self.row], self.mask[:self.row], self.types[:self.row])]
        return PretrainingSplit(*(torch.from_numpy(np.concatenate([p[i] for p in parts])) for i in range(3)))


def pack_examples(documents: Iterable[list[list[int]]], max_seq_length: int, *, cls_id: int, sep_id: int,
                  pad_id: int, seed: int = 0) -> PretrainingSplit:
    """Pack tokenized documents into ELECTRA examples (the algorithm of the module docstring).

    Args:
        documents: each document a list of sentences, each sentence a list of token ids (no specials).
        max_seq_length: L, at least 8.
        cls_id, sep_id, pad_id: special token ids.
        seed: the run seed; its ``packing`` stream draws segment splits and short target lengths.

    Returns:
        PretrainingSplit with ``[num_examples, L]`` tensors; row = ``[CLS] A [SEP] (B [SEP])? pad...``,
        ``token_type_ids`` 1 on B and its [SEP], ``attention_mask`` 1 up to the last [SEP].
    """
    max_seq_length = check_int("max_seq_length", max_seq_length, 8)
    builder = _ExampleBuilder(max_seq_length, random.Random(derive_seed("packing", check_int("seed", seed, 0))))
    writer = _RowWriter(max_seq_length, cls_id, sep_id, pad_id)
    for document in documents:
        for sentence in document:
            example = builder.add_sentence(list(sentence))
            if example:
                writer.write(*example)
        example = builder.end_document()
        if example:
            writer.write(*example)
    return writer.finish()
