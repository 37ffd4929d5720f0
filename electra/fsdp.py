"""``electra-pretrain --fsdp``: FSDP2 (``fully_shard``) in place of DDP (issue 19).

Every encoder layer of the generator and the discriminator is its own FSDP2 unit and the model the root (the
shared word embeddings, heads and the rest live there), so parameters, gradients and optimiser state are sharded
over the ranks and each layer's weights are all-gathered only around its forward and backward.  FSDP2 averages
gradients over ranks as DDP does, so the trainer's loss scaling is the same.  What FSDP2 changes for the trainer:
every rank takes part in every forward (evaluation and export included), and checkpoints hold the full (gathered)
state, written by rank 0 and loaded by every rank (the optimiser state keyed by parameter name: a ``--fsdp``
checkpoint resumes with ``--fsdp``, on any number of ranks).
"""
from __future__ import annotations

import torch


def shard(model) -> None:
    """Rank 0's initial weights on every rank (as DDP broadcasts them: each rank seeds its own initialisation), then
    ``fully_shard`` the encoder layers and the whole model, in place (before the optimiser is built)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if dist.is_initialized():
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor, src=0)

    for part in (model.generator.electra, model.discriminator.electra):
        for layer in part.encoder.layer:
            fully_shard(layer)
    fully_shard(model)


def is_sharded(model) -> bool:
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def full_state(model, optimizer) -> tuple[dict, dict]:
    """The whole model's and optimiser's state as plain tensors on rank 0 (collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer, options=_options())


def load_full_state(model, optimizer, model_state: dict, optimizer_state: dict) -> None:
    """Load a full (unsharded) state into the sharded model and optimiser (every rank reads it).  The model's
    tensors are distributed by hand (``distribute_tensor`` with each parameter's mesh and placements):
    ``set_model_state_dict`` does not place the full tensors of a root unit's (tied) parameters here."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
    from torch.distributed.tensor import DTensor, distribute_tensor

    local = {}
    for name, current in model.state_dict().items():
        full = model_state[name].to(device=current.device, dtype=current.dtype)
        local[name] = distribute_tensor(full, current.device_mesh, current.placements) \
            if isinstance(current, DTensor) else full
    model.load_state_dict(local)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=_options())


def plain_copy(model, build):
    """A plain (unsharded) model with ``model``'s weights, on rank 0 (None elsewhere), for export; ``build()``
    makes a fresh unsharded model of the same config.  Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options())
    if not state:
        return None
    plain = build()
    plain.load_state_dict(state)
    return plain


def value(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (e.g. the gradient norm of sharded gradients); a tensor as it is."""
    return t.full_tensor() if type(t).__name__ == "DTensor" else t
