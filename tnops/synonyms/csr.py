"""The light CSR view of a synonym table that backends and the custom ops receive.

``SynonymTable`` validates and owns the relation; a backend only needs three tensors on the inputs' device:
``offsets [V+1]`` and ``ids [nnz]`` (int32, each row sorted: the Triton and C++ kernels binary-search a
row) and ``pair_keys [nnz+1]`` (int64 ``row·V + id``, globally sorted, one sentinel at the end: the torch
path answers many pairs with one ``searchsorted``).  Building the view costs nothing and never syncs.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class CSRView(NamedTuple):
    offsets: torch.Tensor    # int32 [V+1]
    ids: torch.Tensor        # int32 [nnz]
    pair_keys: torch.Tensor  # int64 [nnz+1], sorted, last entry a sentinel larger than any key

    @property
    def vocab_size(self) -> int:
        return self.offsets.numel() - 1

    def to(self, device: torch.device) -> CSRView:
        return CSRView(*(t.to(device) for t in self))

    def is_synonym(self, gold: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Elementwise ``pred ∈ S[gold]`` for int64 tensors of one shape; ids outside ``[0, V)`` give False."""
        return pair_keys_contain(self.pair_keys, self.vocab_size, gold, pred)


def pair_keys_contain(keys: torch.Tensor, vocab_size: int, gold: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``pred ∈ S[gold]`` by one ``searchsorted`` over the sorted ``row·V + id`` keys (no host sync)."""
    valid = (gold >= 0) & (gold < vocab_size) & (pred >= 0) & (pred < vocab_size)
    # Out-of-range positions query key 0, the pair (0, 0), which is never stored (no self-pairs);
    # masking with `valid` as well keeps the result obviously right without that argument.
    query = torch.where(valid, gold * vocab_size + pred, torch.zeros_like(gold))
    position = torch.searchsorted(keys, query.reshape(-1)).reshape(query.shape)
    return valid & (keys[position] == query)
