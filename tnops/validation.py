"""Argument checks shared by every public function.

Each check runs before any compute and raises ValueError/TypeError naming the argument and what was
expected.  Label-range checks read tensor values: on CPU they raise ValueError; on CUDA they use
``torch._assert_async`` so the loss path never synchronises with the host.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
PREDICTIONS = ("argmax", "sample")
REDUCTIONS = ("mean", "sum", "none")


def tensor(name: str, value, *, floating: bool | None = None, ndim: int | None = None, min_ndim: int | None = None):
    """Check that ``value`` is a tensor of a float (or integer) dtype with the given rank."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if floating is True and value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32, bfloat16, float16 or float64 tensor, got {value.dtype}")
    if floating is False and (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool):
        raise TypeError(f"{name}: expected an integer tensor (int64/int32), got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.dim() < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimension(s), got shape {tuple(value.shape)}")
    return value


def same_device(**tensors):
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{k} on {v}" for k, v in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listed}")


def choice(name: str, value, options):
    if value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")


def integer(name: str, value, *, allow_none: bool = False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}: expected an int{' or None' if allow_none else ''}, got {type(value).__name__}")


def number(name: str, value, *, positive: bool = False, non_negative: bool = False):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value}")
    if non_negative and value < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value}")


def label_range(name: str, labels: torch.Tensor, num_classes: int, ignore_index: int):
    """Every label is ``ignore_index`` or in ``[0, num_classes)``."""
    if labels.numel() == 0 or torch.compiler.is_compiling():  # value checks would break a compiled graph
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if labels.device.type == "cpu":
        if bool(bad.any()):
            value = labels[bad][0].item()
            raise ValueError(f"{name}: expected ids in [0, {num_classes}) or ignore_index={ignore_index}, found {value}")
    else:
        torch._assert_async(~bad.any(), f"{name}: ids must be in [0, {num_classes}) or ignore_index={ignore_index}")


def synonym_table(synonyms, vocab_size: int):
    if synonyms is None:
        return
    if not (hasattr(synonyms, "is_synonym") and hasattr(synonyms, "vocab_size")):
        raise TypeError(f"synonyms: expected a tnops.SynonymTable or None, got {type(synonyms).__name__}")
    if synonyms.vocab_size != vocab_size:
        raise ValueError(f"synonyms: the table was built for a vocabulary of {synonyms.vocab_size} tokens, "
                         f"but the logits have {vocab_size} columns (weight [V, E] / logits [*, V])")


def mlm_options(*, vocab_size, synonyms, prediction, temperature, disallow_correct, seed, sr_weight, ignore_index,
                reduction):
    """Checks of the keyword arguments shared by ``linear_mlm_loss`` and ``mlm_loss``."""
    synonym_table(synonyms, vocab_size)
    choice("prediction", prediction, PREDICTIONS)
    number("temperature", temperature, positive=True)
    if not isinstance(disallow_correct, bool):
        raise TypeError(f"disallow_correct: expected a bool, got {type(disallow_correct).__name__}")
    if disallow_correct and vocab_size < 2:
        raise ValueError(f"disallow_correct: needs a vocabulary of at least 2 tokens, got V={vocab_size}")
    integer("seed", seed, allow_none=True)
    number("sr_weight", sr_weight, non_negative=True)
    integer("ignore_index", ignore_index)
    choice("reduction", reduction, REDUCTIONS)


def sr_table(name: str, embedding: torch.Tensor, vocab_size: int):
    tensor(name, embedding, floating=True, ndim=2)
    if embedding.shape[0] != vocab_size:
        raise ValueError(f"{name}: expected [V={vocab_size}, E'] rows indexed by token id, got shape {tuple(embedding.shape)}")


def common_dtype(hidden: torch.Tensor, *others: torch.Tensor | None) -> torch.dtype:
    """The dtype the head is evaluated in.  Mixed dtypes are accepted only under autocast."""
    dtypes = {t.dtype for t in (hidden, *others) if t is not None}
    if len(dtypes) == 1:
        return hidden.dtype
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    listed = ", ".join(str(d) for d in sorted(dtypes, key=str))
    raise TypeError(f"hidden, weight and bias must share one dtype outside autocast, got {listed}")


def row_ids(value, labels: torch.Tensor):
    """Optional Philox row keys: an integer tensor shaped like ``labels`` with values in ``[0, 2^32)``."""
    if value is None:
        return
    tensor("row_ids", value, floating=False)
    if tuple(value.shape) != tuple(labels.shape):
        raise ValueError(f"row_ids: expected the shape of labels {tuple(labels.shape)}, got {tuple(value.shape)}")
    same_device(row_ids=value, labels=labels)
    if value.device.type == "cpu" and value.numel() and not torch.compiler.is_compiling() and (bool((value < 0).any()) or bool((value >= 2**32).any())):
        raise ValueError("row_ids: expected values in [0, 2^32) (they key a 32-bit Philox counter word)")
