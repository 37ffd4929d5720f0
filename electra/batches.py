"""Batches for pre-training: a resumable, data-parallel-aware order over packed examples."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from electra.seeds import derive_seed


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


@dataclass
class Batch:
    """One rank's share of a batch: ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 ``[b, L]``;
    ``indices`` int64 ``[b]`` (rows of the split); ``global_offset``: position of row 0 within the
    global batch (key per-sequence random numbers by ``global_offset + i``); ``epoch`` and ``step``
    (within the epoch) that produced it."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    indices: torch.Tensor
    global_offset: int
    epoch: int
    step: int

    def to(self, device, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """The batch in page-locked host memory, so ``to(cuda, non_blocking=True)`` does not wait for the GPU."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, function) -> Batch:
        tensors = {k: function(getattr(self, k)) for k in ("input_ids", "attention_mask", "token_type_ids", "indices")}
        return Batch(**tensors, global_offset=self.global_offset, epoch=self.epoch, step=self.step)


class BatchStream:
    """An endless, resumable stream of training batches shared out over data-parallel ranks.

    Epoch e visits the dataset in ``torch.randperm(len(dataset))`` drawn from a generator seeded by the
    ``batches`` stream of (seed, e) (:mod:`electra.seeds`); step s of the epoch is the global batch
    ``perm[s*B:(s+1)*B]`` (B = global_batch_size; the incomplete tail of each epoch is dropped) and rank r
    receives its contiguous slice ``[r*B/W, (r+1)*B/W)``, so the W ranks' slices concatenated are the W=1
    batch.  The state is (epoch, step) of the *next* batch and does not depend on rank or world size.

    Args:
        dataset: anything with ``len()`` whose ``dataset[LongTensor [n]]`` returns a dict with
            ``input_ids``, ``attention_mask`` and ``token_type_ids`` ``[n, L]`` (e.g. PretrainingSplit).
        global_batch_size: B, divisible by world_size, at most len(dataset).
        seed: the order's seed.
        rank, world_size: this process's place among W data-parallel ranks.
    """

    def __init__(self, dataset, global_batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.dataset = dataset
        self.global_batch_size = check_int("global_batch_size", global_batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.world_size = check_int("world_size", world_size, 1)
        self.rank = check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank: must be < world_size={self.world_size}, got {self.rank}")
        if self.global_batch_size % self.world_size:
            raise ValueError(f"global_batch_size={self.global_batch_size} is not divisible by "
                             f"world_size={self.world_size}")
        if len(dataset) < self.global_batch_size:
            raise ValueError(f"global_batch_size={self.global_batch_size} exceeds the dataset's "
                             f"{len(dataset)} examples")
        self.local_batch_size = self.global_batch_size // self.world_size
        self.steps_per_epoch = len(dataset) // self.global_batch_size
        self.epoch, self.step = 0, 0
        self._permutation: tuple[int, torch.Tensor] | None = None

    @property
    def global_step(self) -> int:
        """Batches yielded so far (since epoch 0, step 0)."""
        return self.epoch * self.steps_per_epoch + self.step

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``: int64 ``[len(dataset)]``."""
        if self._permutation is None or self._permutation[0] != epoch:
            generator = torch.Generator().manual_seed(derive_seed("batches", self.seed, epoch))
            self._permutation = (epoch, torch.randperm(len(self.dataset), generator=generator))
        return self._permutation[1]

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        offset = self.rank * self.local_batch_size
        start = self.step * self.global_batch_size + offset
        indices = self.permutation(self.epoch)[start:start + self.local_batch_size]
        batch = Batch(**self.dataset[indices], indices=indices, global_offset=offset, epoch=self.epoch,
                      step=self.step)
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict:
        """``{"epoch", "step"}`` of the next batch, plus what must match on resume."""
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed,
                "global_batch_size": self.global_batch_size, "num_examples": len(self.dataset)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from :meth:`state_dict`, possibly of another rank or world size)."""
        for name in ("seed", "global_batch_size", "num_examples"):
            mine = self.state_dict()[name]
            if state.get(name, mine) != mine:
                raise ValueError(f"state_dict: {name}={state[name]} differs from this stream's {mine}; "
                                 "resuming would not reproduce the same batches")
        epoch, step = check_int("epoch", state["epoch"], 0), check_int("step", state["step"], 0)
        if step >= self.steps_per_epoch:
            raise ValueError(f"state_dict: step={step} is not below steps_per_epoch={self.steps_per_epoch}")
        self.epoch, self.step = epoch, step


def eval_batches(dataset, batch_size: int) -> Iterator[Batch]:
    """The dataset in order, ``batch_size`` rows at a time (the last batch may be smaller).

    Yields:
        Batch with int64 ``[b, L]`` tensors; ``global_offset`` = index of its first row in the dataset.
    """
    batch_size = check_int("batch_size", batch_size, 1)  # checked now, not at the first next()

    def batches() -> Iterator[Batch]:
        for step, start in enumerate(range(0, len(dataset), batch_size)):
            indices = torch.arange(start, min(start + batch_size, len(dataset)))
            yield Batch(**dataset[indices], indices=indices, global_offset=start, epoch=0, step=step)

    return batches()
