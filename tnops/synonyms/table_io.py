"""SynonymTable files: one ``torch.save`` of a dict of tensors and plain values, written atomically and
read with ``weights_only=True`` (:mod:`tnops.io`), so nothing in a table file is ever run.

A file is checked field by field before a table is made of it: ``format_version`` an int, ``offsets``/``ids``
dense 1-D int32 CPU tensors, ``vocab_hash`` a str, ``tokens`` a list of str, ``num_candidates`` an int, and
``build_record`` a dict of plain values (str keys; str, numbers, bools, None, lists and dicts) whose fields
that tnops reads (source, version, options, vocabulary, wordnet_coverage, ...) have their types. A tampered
file is a ValueError naming the file and the field, never a crash later in ``tnops synonyms show/stats``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from ..io import atomic_save, load_file, require_keys

if TYPE_CHECKING:  # table.py imports this module
    from .table import SynonymTable

FORMAT_NAME = "tnops.SynonymTable"
FORMAT_VERSION = 1
PAYLOAD_KEYS = ("offsets", "ids", "vocab_hash", "tokens", "build_record", "num_candidates")

_NUMBER, _INT, _TEXT = "a number", "an int", "a str"
# Build-record fields tnops reads, and what each must be ("or None" where a build may leave it out).
_RECORD_FIELDS = {
    "source": (_TEXT,), "version": (_TEXT, _NUMBER, None), "options": ("a dict",), "tnops_version": (_TEXT,),
    "vocabulary": ("a dict",), "num_candidates": (_INT,), "build_seconds": (_NUMBER,), "headwords": (_INT,),
    "symmetrized": ("a bool",), "wordnet_coverage": ("a dict",),
}
_NESTED_FIELDS = {
    "vocabulary": {"source": (_TEXT,), "size": (_INT,), "family": (_TEXT, None), "lowercase": ("a bool", None)},
    "wordnet_coverage": {"fraction": (_NUMBER,), "with_entry": (_INT,), "tokens": (_INT,)},
}


def _is(value: Any, kind: str | None) -> bool:
    if kind is None:
        return value is None
    if kind == "a bool":
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, never to a table file
        return False
    return isinstance(value, {_TEXT: str, _INT: int, _NUMBER: (int, float), "a dict": dict}[kind])


def _expect(value: Any, kinds: tuple, field: str) -> None:
    if not any(_is(value, kind) for kind in kinds):
        wanted = " or ".join("None" if kind is None else kind for kind in kinds)
        raise ValueError(f"{field}: expected {wanted}, got {type(value).__name__} {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_plain(value: Any, field: str) -> None:
    """str, numbers, bools, None, and lists/tuples/dicts (str keys) of them: what JSON and ``stats`` can print."""
    if value is None or isinstance(value, (str, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{field}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{field}: keys must be str, got {type(key).__name__} {_short(key)}")
            _check_plain(item, f"{field}[{key!r}]")
        return
    raise ValueError(f"{field}: expected plain values (str, numbers, bools, None, lists, dicts), "
                     f"got {type(value).__name__}")


def check_build_record(record: Any) -> None:
    """ValueError naming the field unless ``record`` is a dict of plain values with the known fields' types."""
    _expect(record, ("a dict",), "build_record")
    _check_plain(record, "build_record")
    for name, kinds in _RECORD_FIELDS.items():
        if name in record:
            _expect(record[name], kinds, f"build_record[{name!r}]")
    for name, fields in _NESTED_FIELDS.items():
        for key, kinds in fields.items():
            if key in record.get(name, {}):
                _expect(record[name][key], kinds, f"build_record[{name!r}][{key!r}]")


def _check_index_tensor(value: Any, field: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{field}: expected an int32 tensor, got {type(value).__name__}")
    if value.layout != torch.strided or value.is_nested:
        layout = "nested" if value.is_nested else str(value.layout)
        raise ValueError(f"{field}: expected a dense (strided) tensor, got layout {layout}")
    if value.dtype != torch.int32:
        raise ValueError(f"{field}: expected dtype torch.int32, got {value.dtype}")
    if value.dim() != 1:
        raise ValueError(f"{field}: expected a 1-D tensor, got shape {tuple(value.shape)}")
    if value.device.type != "cpu":
        raise ValueError(f"{field}: expected a tensor on the CPU, got device {value.device}")


def check_format_version(payload: dict) -> None:
    """ValueError unless the file's ``format_version`` is an int this tnops reads (a newer one: upgrade tnops)."""
    version = payload.get("format_version", FORMAT_VERSION)
    _expect(version, (_INT,), "format_version")
    if version > FORMAT_VERSION:
        raise ValueError(f"format_version: {version} is newer than this tnops reads ({FORMAT_VERSION}); "
                         "upgrade tnops")
    if version < 1:
        raise ValueError(f"format_version: expected an int in [1, {FORMAT_VERSION}], got {version}")


def check_payload(payload: dict) -> dict:
    """The fields of a table file, checked (ValueError naming the field); tensors made contiguous."""
    for field in ("offsets", "ids"):
        _check_index_tensor(payload[field], field)
    _expect(payload["vocab_hash"], (_TEXT, None), "vocab_hash")
    tokens = payload["tokens"]
    if tokens is not None:
        if not isinstance(tokens, (list, tuple)):
            raise ValueError(f"tokens: expected a list of str or None, got {type(tokens).__name__}")
        wrong = next((i for i, token in enumerate(tokens) if not isinstance(token, str)), None)
        if wrong is not None:
            raise ValueError(f"tokens: expected a list of str, got {type(tokens[wrong]).__name__} at index {wrong}")
    check_build_record(payload["build_record"])
    _expect(payload["num_candidates"], (_INT, None), "num_candidates")
    return {key: payload[key].contiguous() if key in ("offsets", "ids") else payload[key] for key in PAYLOAD_KEYS}


def save_table(table: SynonymTable, path: str | os.PathLike) -> None:
    """Write ``table`` to ``path`` atomically, creating its folder.

    Raises:
        ValueError: ``path`` is a folder, or the build record holds values :func:`load_table` would refuse.
        OSError: the file cannot be written (the message names it).
    """
    check_build_record(table.build_record)
    payload = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "offsets": table.offsets.cpu(), "ids": table.ids.cpu(),
        "vocab_hash": table.vocab_hash, "tokens": None if table.tokens is None else list(table.tokens),
        "build_record": table.build_record, "num_candidates": table.num_candidates,
    }  # fmt: skip
    atomic_save(payload, path, what="SynonymTable", argument="path")


def load_table(cls: type[SynonymTable], path: str | os.PathLike) -> SynonymTable:
    """``cls(**payload)`` from a file written by :func:`save_table`; every failure is a ValueError naming the file
    (and, for a tampered file, the field)."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f"path: no such file {name!r}")
    payload = load_file(path, what="saved SynonymTable", argument="path")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"path: {name!r} is not a saved SynonymTable")
    invalid = f"path: {name!r} holds an invalid SynonymTable: "
    try:
        check_format_version(payload)  # first: a newer file may hold other keys
    except ValueError as error:
        raise ValueError(f"{invalid}{error}") from None
    require_keys(payload, PAYLOAD_KEYS, repr(name), what="saved SynonymTable", argument="path")
    try:
        return cls(**check_payload(payload))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{invalid}{error}") from None
