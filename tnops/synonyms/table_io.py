"""SynonymTable files: one ``torch.save`` of a dict of tensors and plain values, written atomically and
read with ``weights_only=True`` (:mod:`tnops.io`), so nothing in a table file is ever run."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..io import atomic_save, load_file, require_keys

if TYPE_CHECKING:  # table.py imports this module
    from .table import SynonymTable

FORMAT_NAME = "tnops.SynonymTable"
FORMAT_VERSION = 1
PAYLOAD_KEYS = ("offsets", "ids", "vocab_hash", "tokens", "build_record", "num_candidates")


def save_table(table: SynonymTable, path: str | os.PathLike) -> None:
    """Write ``table`` to ``path`` atomically, creating its folder; ValueError when ``path`` is a folder."""
    payload = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "offsets": table.offsets.cpu(), "ids": table.ids.cpu(),
        "vocab_hash": table.vocab_hash, "tokens": None if table.tokens is None else list(table.tokens),
        "build_record": table.build_record, "num_candidates": table.num_candidates,
    }  # fmt: skip
    atomic_save(payload, path, what="SynonymTable", argument="path")


def load_table(cls: type[SynonymTable], path: str | os.PathLike) -> SynonymTable:
    """``cls(**payload)`` from a file written by :func:`save_table`; every failure is a ValueError naming the file."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f"path: no such file {name!r}")
    payload = load_file(path, what="saved SynonymTable", argument="path")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ValueError(f"path: {name!r} is not a saved SynonymTable")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"path: format version {payload['format_version']} is newer than this tnops reads "
                         f"({FORMAT_VERSION})")
    require_keys(payload, PAYLOAD_KEYS, repr(name), what="saved SynonymTable", argument="path")
    try:
        return cls(**{key: payload[key] for key in PAYLOAD_KEYS})
    except (TypeError, ValueError) as error:
        raise ValueError(f"path: {name!r} holds an invalid SynonymTable: {error}") from None
