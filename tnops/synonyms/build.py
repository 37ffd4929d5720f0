"""The build skeleton every synonym source shares (WordNet, MyThes, embeddings).

A source calls :func:`begin_build` (argument checks, timer, vocabulary analysis, stop-words, candidate
keys), computes its rows from ``ctx.words`` and ``ctx.key_ids``, and hands them to :func:`finish_build`
(build record, table, reverse pairs when ``symmetric``). Only the synonym rule differs between sources.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .table import SynonymTable
from .tokens import VocabularyWords, analyze_vocabulary, load_stopwords


@dataclass(frozen=True)
class BuildContext:
    """What :func:`begin_build` prepared for one table build.

    Attributes:
        words: whole-word analysis of the vocabulary (V tokens).
        stopwords: lower-case words that are never keys.
        key_ids: ids of the candidate keys (whole words, not stop-words); the coverage denominator.
        stopwords_option: how the build record names the stop-words: ``"english"`` for the default
            list, else the sorted list itself.
        symmetric: whether :func:`finish_build` adds every reverse pair.
        started: ``time.perf_counter()`` when the build began.
    """

    words: VocabularyWords
    stopwords: frozenset
    key_ids: list
    stopwords_option: str | list
    symmetric: bool
    started: float


def begin_build(vocab: Any, *, stopwords: Any = None, symmetric: bool = False, family: str | None = None,
                lowercase: bool | None = None) -> BuildContext:
    """Start a table build: check ``symmetric``, start the timer, analyse the vocabulary, load stop-words.

    Args:
        vocab: anything :func:`~tnops.synonyms.vocab.load_vocab` accepts (tokenizer, path, name, list).
        stopwords: words that are never keys (see :func:`~tnops.synonyms.tokens.load_stopwords`).
        symmetric: add every reverse pair when the build finishes.
        family, lowercase: override the vocabulary analysis (see ``analyze_vocabulary``).

    Raises:
        TypeError: ``symmetric`` is not a bool, or a vocabulary / stop-word argument has the wrong type.
        ValueError: the vocabulary or stop-words cannot be read, or ``family`` is unknown.
    """
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric: expected a bool, got {type(symmetric).__name__}")
    started = time.perf_counter()
    words = analyze_vocabulary(vocab, family=family, lowercase=lowercase)
    stop = load_stopwords(stopwords)
    option = "english" if stopwords in (None, True, "english") else sorted(stop)
    return BuildContext(words=words, stopwords=stop, key_ids=words.key_ids(stop), stopwords_option=option,
                        symmetric=symmetric, started=started)


def finish_build(ctx: BuildContext, rows: Any, *, source: str, version: str | None, options: dict,
                 **record: Any) -> SynonymTable:
    """The table of a build begun with :func:`begin_build`, symmetrized when ``ctx.symmetric``.

    Args:
        ctx: from :func:`begin_build`.
        rows: ``{key id: synonym ids}`` or a ``(keys, values)`` pair of id arrays (see :func:`table_from_build`).
        source, version: what built the table.
        options: the source's options, recorded verbatim; sources list ``ctx.stopwords_option`` under
            ``"stopwords"`` and ``ctx.symmetric`` under ``"symmetric"`` among them.
        **record: further build-record entries (e.g. ``wordnet_coverage``).
    """
    table = table_from_build(rows, ctx.words, ctx.key_ids, source=source, version=version, options=options,
                             seconds=time.perf_counter() - ctx.started, **record)
    return table.symmetrized() if ctx.symmetric else table


def table_from_build(rows: Any, words: VocabularyWords, key_ids: list, *, source: str, version: str | None,
                     options: dict, seconds: float, **record: Any) -> SynonymTable:
    """Assemble a builder's result into a table with its vocabulary hash and build record.

    Args:
        rows: ``{key id: synonym ids}`` or a ``(keys, values)`` pair of id arrays (unsorted, repeats
            allowed; self-pairs are dropped).
        words: the :class:`~tnops.synonyms.tokens.VocabularyWords` the rows refer to (V tokens).
        key_ids: the candidate keys (whole words, not stop-words); their count is the coverage denominator.
        source, version, options: what built the table, recorded verbatim (options must be plain values).
        seconds: build wall time, recorded.
        **record: further build-record entries (e.g. ``wordnet_coverage``).
    """
    try:
        tnops_version = metadata.version("tnops")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        tnops_version = "unknown"
    build_record = {
        "source": source, "version": version, "options": options, "tnops_version": tnops_version,
        "vocabulary": {"source": words.vocab.source, "size": words.vocab_size, "family": words.family,
                       "lowercase": words.lowercase},
        "num_candidates": len(key_ids), "build_seconds": round(seconds, 3), **record,
    }  # fmt: skip
    common = dict(tokens=words.vocab.tokens, build_record=build_record, num_candidates=len(key_ids))
    if isinstance(rows, dict):
        return SynonymTable.from_rows(rows, words.vocab_size, **common)
    return SynonymTable.from_pairs(rows[0], rows[1], words.vocab_size, **common)
