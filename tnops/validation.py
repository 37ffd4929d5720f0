"""Argument checks shared by every public function.

Each check runs before any compute and raises ValueError/TypeError naming the argument and what was
expected.  Label-range checks read tensor values: on CPU they raise ValueError; on CUDA they use
``torch._assert_async`` so the loss path never synchronises with the host.
"""
from __future__ import annotations

from numbers import Integral, Real

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
PREDICTIONS = ("argmax", "sample")
REDUCTIONS = ("mean", "sum", "none")
ROW_ID_DTYPES = (torch.int32, torch.int64)
# Below this, z / T overflows float32 for ordinary logits and every score becomes inf (all rows would pick id 0);
# greedy decoding is prediction="argmax".
MIN_TEMPERATURE = 1e-6
SEED_RANGE = (-(2**63), 2**64)
INT64_RANGE = (-(2**63), 2**63)


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


def integer(name: str, value, *, allow_none: bool = False, int64: bool = False):
    """An int (numpy integers included); ``int64``: also within ``[-2^63, 2^63)``, as a schema ``int`` must be."""
    if value is None and allow_none:
        return
    if isinstance(value, torch.SymInt):  # a symbolic int under torch.compile(dynamic=True): checked by the graph
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}: expected an int{' or None' if allow_none else ''}, got {type(value).__name__}")
    if int64 and not INT64_RANGE[0] <= int(value) < INT64_RANGE[1]:
        raise ValueError(f"{name}: expected an integer in [-2^63, 2^63) (a 64-bit label value), got {value}")


def number(name: str, value, *, positive: bool = False, non_negative: bool = False):
    if isinstance(value, bool) or not isinstance(value, (Real, torch.SymFloat, torch.SymInt)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    # not math.isfinite: torch.compile(dynamic=True) traces float arguments as symbols, which math cannot take;
    # these comparisons become guards there (x - x is NaN for inf and NaN)
    if not value - value == 0:
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value}")
    if non_negative and value < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value}")


def label_range(name: str, labels: torch.Tensor, num_classes: int, ignore_index: int):
    """Every label is ``ignore_index`` or in ``[0, num_classes)``."""
    _ids_in_range(name, labels, num_classes, labels != ignore_index, f" or ignore_index={ignore_index}")


def id_range(name: str, ids: torch.Tensor, num_classes: int, where: torch.Tensor):
    """Every id at a position where ``where`` holds is in ``[0, num_classes)`` (no ignore_index exemption)."""
    _ids_in_range(name, ids, num_classes, where, "")


def _ids_in_range(name: str, ids: torch.Tensor, num_classes: int, checked: torch.Tensor, alternative: str):
    if ids.numel() == 0 or torch.compiler.is_compiling():  # value checks would break a compiled graph
        return
    bad = checked & ((ids < 0) | (ids >= num_classes))
    if ids.device.type == "cpu":
        if bool(bad.any()):
            value = ids[bad][0].item()
            raise ValueError(f"{name}: expected ids in [0, {num_classes}){alternative}, found {value}")
    else:
        torch._assert_async(~bad.any(), f"{name}: ids must be in [0, {num_classes}){alternative}")


def synonym_table(synonyms, vocab_size: int):
    if synonyms is None:
        return
    if not (hasattr(synonyms, "is_synonym") and hasattr(synonyms, "vocab_size")):
        raise TypeError(f"synonyms: expected a tnops.SynonymTable or None, got {type(synonyms).__name__}")
    if synonyms.vocab_size != vocab_size:
        raise ValueError(f"synonyms: the table was built for a vocabulary of {synonyms.vocab_size} tokens, "
                         f"but the logits have {vocab_size} columns (weight [V, E] / logits [*, V])")


def seed_value(value) -> int | None:
    """A sampling seed: None, or an integer (numpy integers included) in ``[-2^63, 2^64)``, returned modulo 2^64."""
    integer("seed", value, allow_none=True)
    if value is None:
        return None
    value = int(value)
    if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
        raise ValueError(f"seed: expected an integer in [-2^63, 2^64), got {value}")
    return value % 2**64


def mlm_keywords(*, prediction, temperature, disallow_correct, sr_weight, ignore_index, reduction,
                 label_smoothing=0.0, z_loss=0.0):
    """Checks of the MLM keyword arguments that do not depend on the tensors (also run by the nn modules)."""
    choice("prediction", prediction, PREDICTIONS)
    number("temperature", temperature)
    if temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature: expected a number >= {MIN_TEMPERATURE:g} (logits / temperature overflow below "
                         f"that; prediction='argmax' is the greedy limit), got {temperature}")
    if not isinstance(disallow_correct, bool):
        raise TypeError(f"disallow_correct: expected a bool, got {type(disallow_correct).__name__}")
    number("sr_weight", sr_weight, non_negative=True)
    integer("ignore_index", ignore_index, int64=True)
    choice("reduction", reduction, REDUCTIONS)
    number("label_smoothing", label_smoothing, non_negative=True)
    if label_smoothing >= 1:
        raise ValueError(f"label_smoothing: expected 0 <= label_smoothing < 1, got {label_smoothing}")
    number("z_loss", z_loss, non_negative=True)


def mlm_options(*, vocab_size, synonyms, prediction, temperature, disallow_correct, seed, sr_weight, ignore_index,
                reduction, label_smoothing=0.0, z_loss=0.0):
    """Checks of the keyword arguments shared by ``linear_mlm_loss`` and ``mlm_loss``."""
    if vocab_size < 1:
        raise ValueError("vocabulary: expected V >= 1 tokens (weight [V, E] / logits [*, V]), got V=0")
    synonym_table(synonyms, vocab_size)
    mlm_keywords(prediction=prediction, temperature=temperature, disallow_correct=disallow_correct,
                 sr_weight=sr_weight, ignore_index=ignore_index, reduction=reduction,
                 label_smoothing=label_smoothing, z_loss=z_loss)
    if disallow_correct and vocab_size < 2:
        raise ValueError(f"disallow_correct: needs a vocabulary of at least 2 tokens, got V={vocab_size}")
    seed_value(seed)


def sr_table(name: str, embedding: torch.Tensor, vocab_size: int):
    tensor(name, embedding, floating=True, ndim=2)
    if embedding.shape[1] == 0:
        raise ValueError(f"{name}: expected [V, E'] with E' >= 1, got shape {tuple(embedding.shape)}")
    if embedding.shape[0] != vocab_size:
        raise ValueError(f"{name}: expected [V={vocab_size}, E'] rows indexed by token id, got shape "
                         f"{tuple(embedding.shape)}")


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
    if value.dtype not in ROW_ID_DTYPES:
        raise TypeError(f"row_ids: expected an int32 or int64 tensor, got {value.dtype}")
    if tuple(value.shape) != tuple(labels.shape):
        raise ValueError(f"row_ids: expected the shape of labels {tuple(labels.shape)}, got {tuple(value.shape)}")
    same_device(row_ids=value, labels=labels)
    # int64 comparison: 2**32 does not fit an int32 tensor (every int32 row id would have been refused)
    wide = value.long()
    if value.device.type == "cpu" and value.numel() and not torch.compiler.is_compiling() and (
            bool((wide < 0).any()) or bool((wide >= 2**32).any())):
        raise ValueError("row_ids: expected values in [0, 2^32) (they key a 32-bit Philox counter word)")


def op_indices(labels: torch.Tensor, vocab_size: int, ignore_index: int, row_ids: torch.Tensor | None,
               offsets: torch.Tensor | None, ids: torch.Tensor | None, pair_keys: torch.Tensor | None):
    """The index checks of the ``tnops::mlm_head`` op body: what every backend dereferences, checked with real
    values even inside a compiled graph (where the public functions' Python checks are skipped).

    labels int64 ``[N]``: ``ignore_index`` or in ``[0, V)``; row_ids ``[N]`` in ``[0, 2^32)``; the CSR table:
    offsets ``[V+1]`` non-decreasing within ``[0, nnz]``, ids ``[nnz]`` in ``[0, V)``, pair keys ``[nnz+1]``.
    CPU: ValueError naming the argument; CUDA: ``torch._assert_async`` (no host synchronisation).
    """
    label_range("labels", labels, vocab_size, ignore_index)
    if row_ids is not None:
        _ids_in_range("row_ids", row_ids, 2**32, torch.ones_like(row_ids, dtype=torch.bool), "")
    if offsets is None:
        return
    nnz = ids.numel()
    if offsets.shape != (vocab_size + 1,) or pair_keys is None or pair_keys.shape != (nnz + 1,):
        raise ValueError(f"synonyms: expected CSR offsets [V+1={vocab_size + 1}] and pair keys [nnz+1={nnz + 1}], "
                         f"got {tuple(offsets.shape)} and {None if pair_keys is None else tuple(pair_keys.shape)}")
    steps = offsets[1:].long() - offsets[:-1].long()
    bad_offsets = (offsets < 0).any() | (offsets > nnz).any() | (steps < 0).any()
    if offsets.device.type == "cpu":
        if bool(bad_offsets):
            raise ValueError(f"synonyms: CSR offsets must be non-decreasing within [0, nnz={nnz}] (a tampered table?)")
    else:
        torch._assert_async(~bad_offsets, "synonyms: CSR offsets must be non-decreasing within [0, nnz]")
    _ids_in_range("synonyms", ids, vocab_size, torch.ones_like(ids, dtype=torch.bool), " (CSR ids)")


def no_functorch_transform():
    """Refuse ``torch.func`` transforms (grad, vmap, jacrev, ...): PyTorch cannot run ``torch.library`` custom ops
    with autograd formulas under them, and its own error does not say what to do."""
    if torch._C._functorch.maybe_current_level() is not None:
        raise RuntimeError("tnops: the tnops losses do not support torch.func transforms (torch.func.grad, vmap, "
                           "jacrev, ...); use torch.autograd.grad or loss.backward() instead")
