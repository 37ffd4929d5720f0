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

import codecs
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

_ANNOTATION = re.compile(r"^(.*?)\s*\(([^()]*)\)$")


def _dat_path(dat_path) -> Path:
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

    def __init__(self, lines: list, headwords: dict, encoding: str):
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


def read_mythes(dat_path) -> MythesThesaurus:
    """Read and index a MyThes ``.dat`` thesaurus.

    Args:
        dat_path: path to ``th_*.dat`` (a ``.idx`` path is mapped to the ``.dat`` beside it).

    Returns:
        MythesThesaurus (``len`` = number of headwords; ``meanings(headword)`` parses one entry).

    Raises:
        ValueError: missing file, unknown encoding on the first line, or a malformed entry header
            (line number given).
    """
    path = _dat_path(dat_path)
    raw = path.read_bytes()
    first_line, _, body = raw.partition(b"\n")
    encoding = first_line.decode("ascii", "replace").strip()
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"dat_path: {path} names encoding {encoding!r} on its first line, which Python does not "
                         "know") from None
    lines = body.decode(encoding, errors="replace").split("\n")
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


def mythes_synonym_lists(thesaurus: MythesThesaurus, words, key_ids, keep_annotations: Iterable[str] = ()) -> dict:
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


def build_mythes_table(dat_path, vocab, *, keep_annotations: Iterable[str] = (), stopwords=None,
                       symmetric: bool = False, family: str | None = None, lowercase: bool | None = None):
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
    from .table import table_from_build
    from .tokens import analyze_vocabulary, load_stopwords

    if isinstance(keep_annotations, str):
        raise TypeError("keep_annotations: expected an iterable of annotation strings, got one str")
    keep_annotations = tuple(keep_annotations)
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric: expected a bool, got {type(symmetric).__name__}")
    started = time.perf_counter()
    thesaurus = read_mythes(dat_path)
    words = analyze_vocabulary(vocab, family=family, lowercase=lowercase)
    stop = load_stopwords(stopwords)
    key_ids = words.key_ids(stop)
    rows = mythes_synonym_lists(thesaurus, words, key_ids, keep_annotations)
    options = {"file": Path(_dat_path(dat_path)).name, "encoding": thesaurus.encoding,
               "keep_annotations": sorted(keep_annotations),
               "stopwords": "english" if stopwords in (None, True, "english") else sorted(stop), "symmetric": symmetric}
    table = table_from_build(rows, words, key_ids, source="mythes", version=Path(_dat_path(dat_path)).stem,
                             options=options, seconds=time.perf_counter() - started, headwords=len(thesaurus))
    return table.symmetrized() if symmetric else table
