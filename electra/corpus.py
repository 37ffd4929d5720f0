"""Where ELECTRA pre-training text comes from: text files, a Hugging Face dataset, or a built-in corpus.

A *document* is a str; its sentences are found by :func:`electra.sentences.split_sentences`.  ELECTRA's packer never
lets an example cross a document boundary, so document granularity decides how full examples are.

Built-in corpora (real English that Debian packages install, for machines without network):

* ``python-docs`` (the default): the reStructuredText sources of the Python documentation from the
  apt package ``python3-doc`` (/usr/share/doc/python3.X/html/_sources, ~12 MB of reST for 3.11).
  Markup, directives, code and doctest blocks, tables and titles are stripped; what is left is the
  running prose paragraphs (~5 MB, :func:`electra.rst_prose.clean_rest`), one document per source file.
* ``wordnet``: the WordNet 3.0 glosses (definitions and example sentences) from ``wordnet-base``,
  ~9 MB, one document per 100 glosses of a lexicographer file.  Short and unconnected sentences, so it
  is only the fallback.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from electra.rst_prose import clean_rest
from tnops.io import read_utf8_text

BUILTIN_CORPORA = ("python-docs", "wordnet")
# Where the apt packages put their files; module-level so tests (and unusual systems) can redirect them.
PYTHON_DOCS_GLOBS = ("/usr/share/doc/python3/html/_sources", "/usr/share/doc/python3.*/html/_sources")
WORDNET_DIR = "/usr/share/wordnet"
_CLEANER_VERSION = 1  # bump when the reST or gloss cleaning changes, so cached datasets are rebuilt
_GLOSSES_PER_DOCUMENT = 100
_INSTALL_HINT = ("install the Debian package python3-doc (`apt-get install python3-doc`, the default) "
                 "or wordnet-base, or pass a text file, a directory or a datasets name")


@dataclass
class CorpusSource:
    """A resolved corpus: what it is (``description``), what identifies its content for caching
    (``identity``: paths with sizes and mtimes, a dataset name, or a content hash) and how to read it."""

    kind: str  # "files" | "dataset" | "builtin" | "documents"
    description: str
    identity: dict
    reader: Callable[[], list[str]] = field(repr=False)

    def load(self) -> list[str]:
        """The documents, in a deterministic order; ValueError when there are none."""
        documents = [d for d in self.reader() if d.strip()]
        if not documents:
            raise ValueError(f"corpus: {self.description} holds no documents (empty corpus)")
        return documents


# ----------------------------------------------------------------------------------- text files
def _blocks(text: str) -> list[str]:
    """One document per blank-line-separated block (ELECTRA's "blank lines separate documents")."""
    return [block.strip() for block in re.split(r"\n[ \t\r\f\v]*\n", text) if block.strip()]


def _file_stats(paths: Sequence[Path]) -> list[list]:
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def _text_files(root: Path, pattern: str | None) -> list[Path]:
    if pattern is not None:
        candidates = root.glob(pattern) if "**" in pattern else root.rglob(pattern)
    else:  # *.txt and extension-less files (ELECTRA's corpus dirs hold either), hidden ones skipped
        candidates = (p for p in root.rglob("*") if p.suffix == ".txt" or p.suffix == "")
    return sorted(p for p in candidates if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _files_source(path: Path, pattern: str | None) -> CorpusSource:
    path = path.expanduser().resolve()
    if path.is_dir():
        files = _text_files(path, pattern)
        if not files:
            raise ValueError(f"corpus: directory {path} has no text files matching "
                             f"{pattern or '*.txt or extension-less names'} (pattern=)")
    else:
        files = [path]

    def read() -> list[str]:  # strict UTF-8: a binary or mis-encoded file is an error naming it, never garbage
        return [doc for f in files for doc in _blocks(read_utf8_text(f, what="corpus file", argument="corpus"))]

    identity = {"files": _file_stats(files), "decoding": "utf-8-strict"}  # caches of lenient decoding: rebuilt
    return CorpusSource("files", f"{len(files)} text file(s) under {path}", identity, read)


# ------------------------------------------------------------------------ Hugging Face datasets
def _dataset_source(spec: str, column: str) -> CorpusSource:
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"corpus: {spec!r} is not a datasets name of the form name[:config[:split]]")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), \
        (parts[2] if len(parts) > 2 and parts[2] else "train")

    def read() -> list[str]:
        try:
            import datasets
        except ImportError:
            raise ImportError(f"corpus: {spec!r} names a Hugging Face dataset, which needs the datasets "
                              "library: `pip install datasets`") from None
        table = datasets.load_dataset(name, config, split=split)
        if column not in table.column_names:
            raise ValueError(f"corpus: dataset {spec!r} has no column {column!r} "
                             f"(columns: {', '.join(table.column_names)}; pass column=)")
        # Each non-empty row is one document (OpenWebText rows are whole pages; wikitext rows paragraphs).
        return [row for row in table[column] if row and row.strip()]

    return CorpusSource("dataset", f"datasets {name} config={config} split={split} column={column}",
                        {"dataset": [name, config, split, column]}, read)


# ----------------------------------------------------------------------- built-in: Python docs
def python_docs_dir() -> Path | None:
    """The ``_sources`` directory of the installed Python documentation (apt ``python3-doc``), or None."""
    for pattern in PYTHON_DOCS_GLOBS:
        # Newest version first: python3.12 sorts after python3.11, and the bare python3/ link comes first.
        for match in sorted(glob.glob(pattern), reverse=True):
            if any(Path(match).rglob("*.rst.txt")):
                return Path(match).resolve()
    return None


def _python_docs_source() -> CorpusSource | None:
    root = python_docs_dir()
    if root is None:
        return None
    # The license page is third-party legal boilerplate, not prose worth learning from.
    files = sorted(p for p in root.rglob("*.rst.txt") if p.name != "license.rst.txt")

    def read() -> list[str]:
        documents = []
        for path in files:
            paragraphs = clean_rest(path.read_text(encoding="utf-8", errors="replace"))
            if paragraphs:
                documents.append("\n".join(paragraphs))
        return documents

    return CorpusSource("builtin", f"python-docs ({root}, apt package python3-doc)",
                        {"builtin": "python-docs", "cleaner": _CLEANER_VERSION, "files": _file_stats(files)},
                        read)


# --------------------------------------------------------------------------- built-in: WordNet
def _gloss_sentences(line: str) -> tuple[int, str] | None:
    """A data.* line -> (lexicographer file number, "lemma: definition. example. example.")."""
    if line.startswith("  ") or " | " not in line:  # the license header lines start with two spaces
        return None
    head, gloss = line.split(" | ", 1)
    fields = head.split()
    lemma = fields[4].replace("_", " ")
    lemma = re.sub(r"\(\w+\)$", "", lemma)  # adjective markers such as "(a)"
    pieces = [p.strip() for p in gloss.strip().split(";") if p.strip()]
    definition = "; ".join(p for p in pieces if not p.startswith('"'))
    examples = [p.strip('"').strip() for p in pieces if p.startswith('"')]
    sentences = [f"{lemma}: {definition}." if definition else ""] + [
        e if e.endswith((".", "!", "?")) else e + "." for e in examples if e]
    return int(fields[1]), " ".join(s for s in sentences if s)


def _wordnet_source() -> CorpusSource | None:
    files = [Path(WORDNET_DIR) / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        return None

    def read() -> list[str]:
        by_lexfile: dict[int, list[str]] = {}
        for path in files:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    parsed = _gloss_sentences(line)
                    if parsed:
                        by_lexfile.setdefault(parsed[0], []).append(parsed[1])
        return ["\n".join(glosses[i:i + _GLOSSES_PER_DOCUMENT])
                for _, glosses in sorted(by_lexfile.items())
                for i in range(0, len(glosses), _GLOSSES_PER_DOCUMENT)]

    return CorpusSource("builtin", f"wordnet glosses ({WORDNET_DIR}, apt package wordnet-base)",
                        {"builtin": "wordnet", "cleaner": _CLEANER_VERSION, "files": _file_stats(files)},
                        read)


def _builtin_source(name: str | None) -> CorpusSource:
    makers = {"python-docs": _python_docs_source, "wordnet": _wordnet_source}
    if name is not None and name not in makers:
        raise ValueError(f"corpus: unknown built-in corpus {name!r}; expected one of "
                         f"{', '.join('builtin:' + n for n in BUILTIN_CORPORA)}")
    for candidate in ([name] if name else BUILTIN_CORPORA):  # python-docs first, WordNet as fallback
        source = makers[candidate]()
        if source is not None:
            return source
    wanted = {"python-docs": "python3-doc", "wordnet": "wordnet-base"}
    raise FileNotFoundError(
        f"corpus: the built-in corpus {name or 'default'} is not installed; " + (
            f"install the Debian package {wanted[name]} (`apt-get install {wanted[name]}`)" if name
            else _INSTALL_HINT))


# ------------------------------------------------------------------------------- entry points
def resolve_corpus(corpus=None, *, pattern: str | None = None, column: str = "text") -> CorpusSource:
    """Decide what ``corpus`` names without reading it (see :func:`load_documents` for the forms)."""
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern: expected a glob str such as '*.md', got {type(pattern).__name__}")
    if corpus is None:
        return _builtin_source(None)
    if isinstance(corpus, (list, tuple)):
        if not all(isinstance(d, str) for d in corpus):
            raise TypeError("corpus: a list corpus must hold only str documents")
        documents = list(corpus)
        digest = hashlib.sha256("\x00".join(documents).encode("utf-8", "surrogatepass")).hexdigest()
        return CorpusSource("documents", f"{len(documents)} in-memory document(s)",
                            {"documents": digest}, lambda: documents)
    if isinstance(corpus, os.PathLike):
        corpus = os.fspath(corpus)
    if not isinstance(corpus, str):
        raise TypeError(f"corpus: expected None, a path, a datasets name or a list of str, "
                        f"got {type(corpus).__name__}")
    if corpus.startswith("builtin:"):
        return _builtin_source(corpus[len("builtin:"):])
    if corpus.startswith("hf:"):
        return _dataset_source(corpus[len("hf:"):], column)
    if os.path.exists(os.path.expanduser(corpus)):
        return _files_source(Path(corpus), pattern)
    # "name:config:split" is a dataset; anything else that does not exist is a missing path.
    if ":" in corpus and not re.match(r"[A-Za-z]:[\\/]", corpus):
        return _dataset_source(corpus, column)
    raise FileNotFoundError(f"corpus: no such file or directory: {corpus!r} (a datasets name needs "
                            "the form name:config[:split] or the prefix hf:)")


def load_documents(corpus=None, *, pattern: str | None = None, column: str = "text") -> list[str]:
    """Read a corpus as a list of documents (str), in a deterministic order.

    Args:
        corpus: one of
            * a UTF-8 text file: one document per blank-line-separated block;
            * a directory: every ``*.txt`` and extension-less file below it (recursively, hidden
              names skipped, sorted), or those matching the glob ``pattern``; blocks as above.  A file
              that is not UTF-8 text (binary, Latin-1, UTF-16) is refused, also inside a directory
              (ValueError naming it; exclude it with ``pattern``), never decoded into garbage;
            * ``"name[:config[:split]]"`` or ``"hf:name..."``: a Hugging Face ``datasets`` dataset
              (split default ``train``), one document per non-empty row of ``column``; needs
              ``pip install datasets``;
            * ``None``: the built-in default, Python documentation prose (apt ``python3-doc``), else
              WordNet glosses (apt ``wordnet-base``); ``"builtin:python-docs"`` / ``"builtin:wordnet"``
              pick one;
            * a list of str: the documents themselves.
        pattern: glob for directories, e.g. ``"*.md"`` (recursive) or ``"books/**/*.txt"``.
        column: text column of a datasets dataset.

    Returns:
        list[str] of length D (number of documents), none empty.

    Raises:
        FileNotFoundError: a path that does not exist, or no built-in corpus installed.
        ImportError: a datasets name without the datasets library.
        ValueError: the corpus holds no documents, a file is not UTF-8 text, or a malformed name.
        TypeError: ``corpus`` or ``pattern`` of the wrong type.
    """
    return resolve_corpus(corpus, pattern=pattern, column=column).load()
