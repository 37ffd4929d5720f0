"""The synonym table of a run: ``--synonyms FILE | wordnet | mythes:PATH`` (default ``wordnet``).

``FILE``: a table saved by ``tnops synonyms build`` (or a previous run), checked against the tokenizer's
vocabulary.  ``wordnet`` (English) and ``mythes:PATH`` (an OpenOffice/LibreOffice thesaurus ``th_*.dat``, e.g.
/usr/share/mythes/th_da_DK.dat for a Danish vocabulary): built for the run's tokenizer (the ``--source``
values of ``tnops synonyms build``) and cached as ``OUTPUT_DIR/synonyms.pt``; a cached table built from
another source or for another vocabulary is rebuilt.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch.distributed as dist

import tnops

__all__ = ["run_synonyms", "synonyms_source"]

BUILT = ("wordnet", "mythes")


def _split(text: str) -> tuple[str, str | None]:
    """``wordnet`` → (wordnet, None); ``mythes:PATH`` → (mythes, PATH); anything else → (file, text)."""
    kind, colon, path = text.partition(":")
    if text == "wordnet":
        return "wordnet", None
    if kind == "mythes" and colon:
        return "mythes", path
    return "file", text


def synonyms_source(text: str) -> str:
    """argparse type of ``--synonyms``: a saved table, ``wordnet`` or ``mythes:PATH`` (an existing file)."""
    kind, path = _split(text)
    if kind == "mythes" and not Path(path).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"mythes:PATH needs an existing thesaurus file (th_*.dat), got {path!r}")
    if kind == "file" and not text:
        raise argparse.ArgumentTypeError("expected a saved table, wordnet or mythes:PATH, got ''")
    return text


def _build(kind: str, path: str | None, tokenizer, progress: bool):
    if kind == "wordnet":
        return tnops.SynonymTable.from_wordnet(tokenizer, progress=progress)
    return tnops.SynonymTable.from_mythes(Path(path).expanduser(), tokenizer)


def _cached(target: Path, kind: str, path: str | None, tokenizer) -> bool:
    """``target`` holds a table built from this source for this vocabulary."""
    if not target.is_file():
        return False
    try:
        table = tnops.SynonymTable.load(target, vocab=tokenizer)
    except ValueError:  # another vocabulary, or not a table: rebuild it
        return False
    record = table.build_record or {}
    same_file = kind != "mythes" or (record.get("options") or {}).get("file") == Path(path).name
    return record.get("source") == kind and same_file


def run_synonyms(args, tokenizer, output_dir: Path, rank: int):
    """The run's ``tnops.SynonymTable`` (None with ``--no-hc``); rank 0 builds it, the other ranks then load it."""
    if args.no_hc:
        return None
    kind, path = _split(args.synonyms or "wordnet")
    if kind == "file":
        return tnops.SynonymTable.load(path, vocab=tokenizer)
    target = output_dir / "synonyms.pt"
    if rank == 0 and not _cached(target, kind, path, tokenizer):
        _build(kind, path, tokenizer, progress=not args.no_progress).save(target)
    if dist.is_initialized():
        dist.barrier()
    return tnops.SynonymTable.load(target, vocab=tokenizer)
