"""Synonym tables from LibreOffice/OpenOffice thesauri (MyThes ``.dat`` files, any language).

Format of ``th_<lang>.dat`` (Debian ``mythes-*`` packages, /usr/share/mythes): the first line names
the encoding (``UTF-8``, ``ISO8859-1``, ...); then every entry is a header line ``headword|n`` followed
by ``n`` meaning lines ``pos|term|term|...`` (``pos`` may be empty, as in Danish). A term may carry a
trailing annotation: English th_en_US_v2 marks related words, not synonyms, with ``(generic term)``
(hypernym), ``(similar term)``, ``(related term)`` and ``(antonym)``; Danish th_da_DK marks hyponyms
with ``(underbegreb)`` and register with ``(daglig tale)``, ``(fagudtryk)``, ``(vulgær)``.

Rule: S[w] = the plain (unannotated) terms of every meaning of headword w that are whole-word
vocabulary tokens, minus w itself. Annotated terms are dropped unless their annotation is listed in
``keep_annotations`` (e.g. ``("daglig tale", "fagudtryk", "vulgær")`` for Danish register-marked
synonyms); antonyms would poison hard correction, so nothing is kept by default. Headwords are
matched exactly (in lower case for an uncased vocabulary): MyThes has no morphology of its own
(LibreOffice stems with hunspell first), so "dogs" finds nothing when only "dog" is a headword.

The relation is directed: a headword lists its terms, and a term is a key only when it is a
headword too, with its own entry (thesaurus entries are not always mutual). ``symmetric=True``
adds every reverse pair.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .build import begin_build, finish_build
from .table import SynonymTable
from .tokens import VocabularyWords

_ANNOTATION = re.compile(r"^(.*?)\s*\(([^()]*)\)$")


def _dat_path(dat_path: Any) -> Path:
    if not isinstance(dat_path, (str, os.PathLike)):
        raise TypeError(f"dat_path: expected a path to a MyThes .dat file, got {type(dat_path).__name__}")
    path = Path(dat_path)
    if path.suffix == ".idx":  # accept the index too: the data sits beside it
        path = path.with_suffix(".dat")
    if not path.is_file():
        raise ValueError(f"dat_path: no such MyThes file {str(path)!r} (Debian: apt-get install mythes-en-us)")
    return path


def split_annotation(term: str) -> tuple:
    """``"water (generic term)"`` -> ``("water", "generic term")``; ``"chief"`` -> ``("chief", None)``."""
    match = _ANNOTATION.match(term)
    return (match.group(1), match.group(2)) if match else (term, None)


class MythesThesaurus:
    """An indexed MyThes thesaurus: meaning lines are split only when a headword is asked for.

    Attributes:
        encoding: the encoding named on the file's first line.
        headwords: dict headword -> (first meaning line, number of meaning lines).
    """

    def __init__(self, lines: list, headwords: dict, encoding: str) -> None:
        self._lines = lines
        self.headwords = headwords
        self.encoding = encoding

    def __len__(self) -> int:
        return len(self.headwords)

    def meanings(self, headword: str) -> list:
        """``[(pos, [term, ...]), ...]`` of one headword (terms as written, annotations included)."""
        start, count = self.headwords[headword]
        meanings = []
        for line in self._lines[start : start + count]:
            pos, *terms = line.rstrip("\r").split("|")
            meanings.append((pos, [term for term in terms if term]))
        return meanings


def read_mythes(dat_path: str | os.PathLike) -> MythesThesaurus:
    """Read and index a MyThes ``.dat`` thesaurus.

    Args:
        dat_path: path to ``th_*.dat`` (a ``.idx`` path is mapped to the ``.dat`` beside it).

    Returns:
        MythesThesaurus (``len`` = number of headwords; ``meanings(headword)`` parses one entry).

    Raises:
        ValueError: missing file, unknown encoding on the first line, bytes that are not valid in that
            encoding, or a malformed entry header (file and line number given).
    """
    path = _dat_path(dat_path)
    raw = path.read_bytes()
    if b"\0" in raw:  # a binary or UTF-16/32 file: decoded, it would give garbled headwords (or a bare codec error)
        offset = raw.index(b"\0")
        line = raw.count(b"\n", 0, offset) + 1
        raise ValueError(f"dat_path: {path}:{line}: a NUL byte at offset {offset}; a MyThes "
                         ".dat file is text in the encoding named on its first line (a binary or UTF-16 file?)")
    first_line, _, body = raw.partition(b"\n")
    encoding = first_line.decode("ascii", "replace").strip()
    try:
        text = body.decode(encoding)
    except LookupError:  # unknown, or not a text encoding ("rot13", "base64")
        raise ValueError(f"dat_path: {path} names encoding {encoding!r} on its first line, which is not a text "
                         "encoding Python knows") from None
    except UnicodeDecodeError as error:  # never "replace": a mis-declared file would give wrong headwords
        line = body.count(b"\n", 0, error.start) + 2  # the encoding line is line 1
        raise ValueError(f"dat_path: {path}:{line}: bytes {body[error.start:error.end]!r} are not valid {encoding} "
                         "(the encoding named on the file's first line)") from None
    lines = text.split("\n")
    headwords = {}
    number = 0
    while number < len(lines):
        line = lines[number].rstrip("\r")
        number += 1
        if not line:
            continue
        headword, bar, count = line.rpartition("|")
        if not bar or not count.isdigit():
            raise ValueError(f"dat_path: {path}:{number + 1}: expected 'headword|count', got {line[:80]!r}")
        if int(count) > len(lines) - number:
            raise ValueError(f"dat_path: {path}:{number + 1}: entry {headword!r} announces {count} meanings past "
                             "the end")
        # A headword listed twice keeps its first entry, as MyThes' binary search of the .idx would.
        headwords.setdefault(headword, (number, int(count)))
        number += int(count)
    return MythesThesaurus(lines, headwords, encoding)


def mythes_synonym_lists(thesaurus: MythesThesaurus, words: VocabularyWords, key_ids: list,
                         keep_annotations: Iterable[str] = ()) -> dict:
    """Synonym ids of every key token from a thesaurus.

    Args:
        thesaurus: from :func:`read_mythes`.
        words: :class:`~tnops.synonyms.tokens.VocabularyWords` (V tokens).
        key_ids: token ids that may be keys.
        keep_annotations: annotations whose terms are kept (all annotated terms are dropped otherwise).

    Returns:
        dict key id -> list of synonym ids (unsorted, may repeat).
    """
    keep = frozenset(keep_annotations)
    headwords_by_form = {}  # matching form -> headwords (an uncased vocabulary merges "Main" and "main")
    for headword in thesaurus.headwords:
        headwords_by_form.setdefault(words.normalize(headword), []).append(headword)
    rows = {}
    for key_id in key_ids:
        synonyms = []
        for headword in headwords_by_form.get(words.words[key_id], ()):
            for _, terms in thesaurus.meanings(headword):
                for term in terms:
                    text, annotation = split_annotation(term)
                    if annotation is None or annotation in keep:
                        synonyms.extend(i for i in words.ids_of(text) if i != key_id)
        if synonyms:
            rows[key_id] = synonyms
    return rows


def build_mythes_table(dat_path: str | os.PathLike, vocab: Any, *, keep_annotations: Iterable[str] = (),
                       stopwords: Any = None, symmetric: bool = False, family: str | None = None,
                       lowercase: bool | None = None) -> SynonymTable:
    """Thesaurus synonym table over a vocabulary (``SynonymTable.from_mythes``).

    Args:
        dat_path: MyThes ``th_*.dat`` file (e.g. /usr/share/mythes/th_en_US_v2.dat).
        vocab: tokenizer, vocab.txt/tokenizer.json path, known name or list[str].
        keep_annotations: annotations whose terms count as synonyms too (default none; see header).
        stopwords: words that are never keys (default nltk's English list; pass False or a
            language's own list for other languages).
        symmetric: add every reverse pair (default: the thesaurus' own direction).
        family, lowercase: override the vocabulary analysis.

    Returns:
        SynonymTable; ``build_record`` notes the file, its encoding and the options.

    Raises:
        TypeError/ValueError: bad ``dat_path`` (missing, unknown encoding, malformed) or options.
    """
    path = _dat_path(dat_path)
    if isinstance(keep_annotations, str):
        raise TypeError("keep_annotations: expected an iterable of annotation strings, got one str")
    keep_annotations = tuple(keep_annotations)
    ctx = begin_build(vocab, stopwords=stopwords, symmetric=symmetric, family=family, lowercase=lowercase)
    thesaurus = read_mythes(path)
    rows = mythes_synonym_lists(thesaurus, ctx.words, ctx.key_ids, keep_annotations)
    options = {"file": path.name, "encoding": thesaurus.encoding, "keep_annotations": sorted(keep_annotations),
               "stopwords": ctx.stopwords_option, "symmetric": ctx.symmetric}
    return finish_build(ctx, rows, source="mythes", version=path.stem, options=options, headwords=len(thesaurus))
