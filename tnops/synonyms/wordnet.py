"""WordNet synonyms through nltk, with Debian's WordNet 3.0 as an offline fallback (DESIGN §3, §6).

nltk reads WordNet only from ``<dir>/corpora/wordnet/`` on ``nltk.data.path``. Users with network
access run ``nltk.download("wordnet")``. Without it, Debian's ``wordnet-base`` and
``wordnet-sense-index`` packages put the same WordNet 3.0 database in /usr/share/wordnet; we copy
those files (copies, not links: nltk 3.10's corpus reader resolves links and refuses a file whose
real path "escapes root" with a ValueError) into a tnops-owned nltk data directory and add the
``lexnames`` file nltk needs, which Debian does not ship (its 45 lines are the table of the
lexnames(5WN) man page, stored in ``data/wordnet_lexnames``).

Synonym rule: S[w] = every lemma of every synset of w (``wn.synsets`` applies morphy, so inflected
forms find their base form's synsets), minus multi-word lemmas, minus w itself, restricted to
lemmas that are whole-word vocabulary tokens. Lemma sharing is symmetric between base forms, but
the table is not: through morphy an inflected key ("dogs") lists its base form ("dog") and the base
form does not list the inflection, and a stop-word is listed as a synonym ("also" -> "too") without
being a key. For bert-base-uncased 59,414 pairs hold and 32,256 reverse pairs are missing. The table
keeps the rule of DESIGN §3 as stated; ``symmetric=True`` adds every reverse pair.

Tables are built by :class:`WordNetDatabase`, which reads the files nltk finds with nltk's own lookup
rules but parses only lemma names (about 10x faster than nltk's reader, which stays available as
``engine="nltk"``, and is checked against it in the tests).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .build import begin_build, finish_build
from .table import SynonymTable
from .tokens import VocabularyWords, token_text

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
_DATA_DIR = Path(__file__).resolve().parent / "data"
# The files nltk's WordNetCorpusReader opens (its _FILES, minus lexnames, which we write ourselves).
WORDNET_DATABASE_FILES = (
    "cntlist.rev", "index.sense",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)  # fmt: skip
_INSTALL_HINT = (
    "install it with nltk.download('wordnet') (needs network access) or, on Debian/Ubuntu, "
    "`apt-get install wordnet-base wordnet-sense-index` (tnops then copies /usr/share/wordnet "
    "into $TNOPS_NLTK_DATA or ~/.cache/tnops/nltk_data)"
)


def tnops_nltk_data_dir() -> Path:
    """The nltk data directory tnops owns: ``$TNOPS_NLTK_DATA`` or ``~/.cache/tnops/nltk_data``."""
    configured = os.environ.get("TNOPS_NLTK_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tnops" / "nltk_data"


def _missing_debian_files(source: Path) -> list:
    return [name for name in WORDNET_DATABASE_FILES if not (source / name).is_file()]


def install_debian_wordnet(target: os.PathLike | None = None, source: os.PathLike = DEBIAN_WORDNET_DIR) -> Path:
    """Make Debian's WordNet 3.0 database readable by nltk.

    Args:
        target: an nltk data directory; default :func:`tnops_nltk_data_dir`.
        source: the directory holding the database files (``/usr/share/wordnet``).

    Returns:
        The nltk data directory (``target``); ``target/corpora/wordnet`` then holds copies of the
        database files and a ``lexnames`` file. Nothing is copied when it is already complete.

    Raises:
        FileNotFoundError: ``source`` lacks database files (names them and how to install them).
    """
    target = Path(target) if target is not None else tnops_nltk_data_dir()
    source = Path(source)
    corpus = target / "corpora" / "wordnet"
    if (corpus / "lexnames").is_file() and not _missing_debian_files(corpus):
        return target
    missing = _missing_debian_files(source)
    if missing:
        raise FileNotFoundError(f"WordNet database files missing in {source}: {', '.join(missing)}; {_INSTALL_HINT}")
    corpus.parent.mkdir(parents=True, exist_ok=True)
    # Fill a scratch directory and rename it into place, so concurrent processes (pytest-xdist,
    # several CLI runs) never see a half-copied corpus.
    scratch = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=corpus.parent))
    try:
        for name in WORDNET_DATABASE_FILES:
            shutil.copyfile(source / name, scratch / name)  # a copy, never a symlink (see header)
        lexnames = (_DATA_DIR / "wordnet_lexnames").read_text("utf-8")
        (scratch / "lexnames").write_text(lexnames, encoding="utf-8")
        try:
            scratch.rename(corpus)
        except OSError:  # another process won the race (or a partial corpus exists): keep a complete one
            if not ((corpus / "lexnames").is_file() and not _missing_debian_files(corpus)):
                shutil.rmtree(corpus, ignore_errors=True)
                scratch.rename(corpus)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def nltk_search_path() -> list:
    """nltk's data search path, without importing nltk when it is not imported yet.

    Importing nltk costs ~2 s (it pulls in scipy), more than the whole fast table build, so the
    default path is rebuilt here exactly as ``nltk/data.py`` builds it; once nltk is imported its
    live ``nltk.data.path`` (with any user additions) is used instead.
    """
    if "nltk.data" in sys.modules:
        return list(sys.modules["nltk.data"].path)
    path = [d for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    if "APPENGINE_RUNTIME" not in os.environ and os.path.expanduser("~/") != "~/":
        path.append(os.path.expanduser("~/nltk_data"))
    if sys.platform.startswith("win"):
        path += [os.path.join(sys.prefix, "nltk_data"), os.path.join(sys.prefix, "share", "nltk_data"),
                 os.path.join(sys.prefix, "lib", "nltk_data"),
                 os.path.join(os.environ.get("APPDATA", "C:\\"), "nltk_data"),
                 r"C:\nltk_data", r"D:\nltk_data", r"E:\nltk_data"]
    else:
        path += [os.path.join(sys.prefix, "nltk_data"), os.path.join(sys.prefix, "share", "nltk_data"),
                 os.path.join(sys.prefix, "lib", "nltk_data"), "/usr/share/nltk_data", "/usr/local/share/nltk_data",
                 "/usr/lib/nltk_data", "/usr/local/lib/nltk_data"]
    return path


def _complete(corpus: Path) -> bool:
    return (corpus / "lexnames").is_file() and not _missing_debian_files(corpus)


def _readable(corpus: Path) -> bool:
    """Whether the files WordNetDatabase reads are there (nltk's own download may differ in others)."""
    names = [name for suffix in ("noun", "verb", "adj", "adv")
             for name in (f"index.{suffix}", f"data.{suffix}", f"{suffix}.exc")]
    return all((corpus / name).is_file() for name in names)


def find_wordnet_root(source: os.PathLike = DEBIAN_WORDNET_DIR) -> Path | tuple[Path, str]:
    """Where the WordNet database is: a directory, or ``(zip path, member prefix)`` for nltk's zip.

    Looks on nltk's data path first (``nltk.download("wordnet")`` puts ``corpora/wordnet`` or
    ``corpora/wordnet.zip`` there), then in the tnops data directory, installing Debian's database
    from ``source`` there when needed.

    Returns:
        ``Path`` of a directory holding the database files, or ``(Path to wordnet.zip, "wordnet/")``.

    Raises:
        LookupError: neither is present; the message names both ways to install WordNet.
    """
    for directory in nltk_search_path():
        corpus = Path(directory) / "corpora" / "wordnet"
        if _readable(corpus):
            return corpus
        if corpus.with_suffix(".zip").is_file():
            return corpus.with_suffix(".zip"), "wordnet/"
    corpus = tnops_nltk_data_dir() / "corpora" / "wordnet"
    if not _complete(corpus):
        if _missing_debian_files(Path(source)):
            raise LookupError(
                f"WordNet was found neither on nltk's data path ({nltk_search_path()}) nor in {source}; {_INSTALL_HINT}"
            )
        install_debian_wordnet(corpus.parent.parent, source)
    return corpus


def load_wordnet(source: os.PathLike = DEBIAN_WORDNET_DIR) -> Any:
    """``nltk.corpus.wordnet``, loaded, with the tnops data directory on ``nltk.data.path`` when that is
    where WordNet is (see :func:`find_wordnet_root`).

    Raises:
        LookupError: WordNet is not installed; the message names both ways to install it.
    """
    import nltk
    from nltk.corpus import wordnet

    root = find_wordnet_root(source)
    data_dir = str((root[0] if isinstance(root, tuple) else root).parent.parent)
    if data_dir not in nltk.data.path:
        nltk.data.path.append(data_dir)
    wordnet.ensure_loaded()
    return wordnet


# nltk's reader parses every pointer, gloss and example of each synset it touches through guarded
# regexes: importing nltk takes ~2 s, loading WordNet ~10 s and bert-base-uncased's lookups ~9 s on 2
# cores. WordNetDatabase reads the same files with nltk's lookup semantics (WordNetCorpusReader.synsets:
# lower-case, then per part of speech morphy with the substitution rules and exception lists below,
# then index offsets) but parses only lemma names, which is all a synonym table needs. The tests check
# that both give the same synonyms and that these rules equal nltk's MORPHOLOGICAL_SUBSTITUTIONS.
_LEMMA_MARKER = re.compile(r"(.*?)(\([^()]*\))?$")  # "name(a)" -> "name": nltk's syntactic-marker rule
_PARTS_OF_SPEECH = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}  # nltk's POS_LIST order
MORPHOLOGICAL_SUBSTITUTIONS = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


class WordNetDatabase:
    """Read-only WordNet database with nltk's ``synsets()`` semantics, reading only lemma names.

    Args:
        root: what :func:`find_wordnet_root` returns: a directory holding the database files
            (index.*, data.*, *.exc), or ``(path to a zip, member prefix)``.
    """

    def __init__(self, root: Path | tuple[Path, str]) -> None:
        self._substitutions = MORPHOLOGICAL_SUBSTITUTIONS
        self._index = {}  # pos -> lemma -> list of offset strings
        self._exceptions = {}  # pos -> inflected form -> base forms
        self._data = {}  # pos -> bytes of data.<pos>
        for pos, suffix in _PARTS_OF_SPEECH.items():
            index = {}
            for line in self._read(root, f"index.{suffix}").decode("utf-8").split("\n"):
                if not line or line.startswith(" "):  # license header lines start with a space
                    continue
                fields = line.split()
                index[fields[0]] = fields[-int(fields[2]):]
            self._index[pos] = index
            exceptions = {}
            for line in self._read(root, f"{suffix}.exc").decode("utf-8").split("\n"):
                terms = line.split()
                if terms:
                    exceptions[terms[0]] = terms[1:]
            self._exceptions[pos] = exceptions
            self._data[pos] = self._read(root, f"data.{suffix}")
        self._lemma_names = {}
        self._synonym_sets = {}
        header = self._data["a"][:4096].decode("utf-8", "replace")
        match = re.search(r"Word[nN]et (\d+\+?|\d+\.\d+) Copyright", header)
        self.version = match.group(1) if match else "unknown"

    @staticmethod
    def _read(root, name: str) -> bytes:
        if isinstance(root, tuple):
            archive, prefix = root
            with zipfile.ZipFile(archive) as zipped:
                return zipped.read(prefix + name)
        return (Path(root) / name).read_bytes()

    def _morphy(self, form: str, pos: str) -> list:
        """nltk's ``_morphy``: exception bases (or one round of suffix rules) plus the form itself,
        kept when listed in this part of speech's index, first occurrence first."""
        if form in self._exceptions[pos]:
            forms = self._exceptions[pos][form]
        else:
            forms = [form[: -len(old)] + new for old, new in self._substitutions[pos] if form.endswith(old)]
        index = self._index[pos]
        return list(dict.fromkeys(f for f in [form, *forms] if f in index))

    def synset_keys(self, word: str) -> list:
        """(pos, byte offset) of every synset ``nltk.corpus.wordnet.synsets(word)`` returns, same order."""
        word = word.lower()
        return [(pos, int(offset)) for pos in _PARTS_OF_SPEECH for form in self._morphy(word, pos)
                for offset in self._index[pos][form]]

    def lemma_names(self, pos: str, offset: int) -> tuple:
        """Lemma names of one synset, as ``Synset.lemma_names()`` gives them (markers removed)."""
        key = (pos, offset)
        names = self._lemma_names.get(key)
        if names is None:
            data = self._data[pos]
            line = data[offset : data.index(b"\n", offset)].split(b"|", 1)[0].decode("utf-8")
            fields = line.split()
            count = int(fields[3], 16)  # w_cnt is two hex digits
            names = tuple(_LEMMA_MARKER.match(name).group(1) for name in fields[4 : 4 + 2 * count : 2])
            self._lemma_names[key] = names
        return names

    def synonym_sets(self, word: str) -> list:
        """Lemma names of each synset of ``word`` (list of tuples of str), like nltk's synsets + lemma_names."""
        word = word.lower()
        sets = self._synonym_sets.get(word)
        if sets is None:  # cached: the coverage count looks every key up a second time
            sets = self._synonym_sets[word] = [self.lemma_names(pos, offset) for pos, offset in self.synset_keys(word)]
        return sets


@functools.lru_cache(maxsize=1)
def open_wordnet_database(root) -> WordNetDatabase:
    """:class:`WordNetDatabase` for ``root``, kept for the next build (tables for several tokenizers)."""
    return WordNetDatabase(root)


def nltk_synonym_sets(wordnet: Any) -> Callable[[str], list]:
    """Adapter: ``word -> [synset.lemma_names() ...]`` through a loaded nltk reader (slow, reference)."""
    return lambda word: [tuple(synset.lemma_names()) for synset in wordnet.synsets(word)]


def wordnet_synonym_lists(words: VocabularyWords, key_ids: list, synonym_sets: Callable[[str], list],
                          progress: bool = False) -> dict:
    """WordNet synonyms of every key token.

    Args:
        words: :class:`~tnops.synonyms.tokens.VocabularyWords` (V tokens).
        key_ids: token ids that may be keys (whole words, not stop-words).
        synonym_sets: ``word -> list of lemma-name tuples`` (``WordNetDatabase.synonym_sets`` or
            :func:`nltk_synonym_sets`).
        progress: show a tqdm progress bar.

    Returns:
        dict key id -> list of synonym token ids (unsorted, may repeat; the table sorts and dedups).
    """
    rows = {}
    lemma_ids_cache = {}  # lemma name -> token ids; lemma names repeat across many keys
    for key_id in tqdm(key_ids, desc="wordnet", unit="tok", disable=not progress, mininterval=0.5):
        synonyms = []
        for names in synonym_sets(words.words[key_id]):
            for name in names:
                ids = lemma_ids_cache.get(name)
                if ids is None:
                    # Multi-word lemmas ("domestic_dog") are written with "_" and are never one token.
                    ids = [] if "_" in name else words.ids_of(name)
                    lemma_ids_cache[name] = ids
                synonyms.extend(i for i in ids if i != key_id)
        if synonyms:
            rows[key_id] = synonyms
    return rows


def wordnet_entry_coverage(words: VocabularyWords, stopwords: frozenset, synonym_sets: Callable[[str], list]) -> dict:
    """The paper's coverage figure (footnote 5): how many vocabulary tokens have a WordNet entry.

    Denominator: every vocabulary token whose lower-case text is not a stop-word (special tokens,
    ``##`` pieces, numbers included). Numerator: those whose text has at least one synset through
    ``wn.synsets`` (morphy applied). A token's text is the token itself for WordPiece, and the
    token without its ``▁``/``Ġ`` word-start marker for SentencePiece and byte-BPE. On
    bert-base-uncased: 18,987 / 30,372 = 62.51 %.

    Returns:
        dict with ``with_entry``, ``tokens`` (the denominator) and ``fraction``.
    """
    texts = [token_text(token, words.family) for token in words.vocab.tokens]
    counted = [text for text in texts if text.lower() not in stopwords]
    with_entry = sum(1 for text in counted if synonym_sets(text))
    return {"with_entry": with_entry, "tokens": len(counted), "fraction": with_entry / max(len(counted), 1)}


def build_wordnet_table(vocab: Any, *, stopwords: Any = None, engine: str = "fast", symmetric: bool = False,
                        family: str | None = None, lowercase: bool | None = None, progress: bool = False,
                        source: os.PathLike = DEBIAN_WORDNET_DIR) -> SynonymTable:
    """WordNet synonym table over a vocabulary (``SynonymTable.from_wordnet``).

    Args:
        vocab: tokenizer, vocab.txt/tokenizer.json path, known name or list[str] (see ``load_vocab``).
        stopwords: words that are never keys (default nltk's English list; False for none; see
            :func:`~tnops.synonyms.tokens.load_stopwords`).
        engine: ``"fast"`` (:class:`WordNetDatabase`, ~3.5 s for 30k tokens on 2 cores) or ``"nltk"``
            (``nltk.corpus.wordnet.synsets``, identical result, ~20 s).
        symmetric: add every reverse pair (morphy makes "dogs" -> "dog" one-way; see the module header).
        family, lowercase: override the vocabulary analysis (see ``analyze_vocabulary``).
        progress: show a progress bar.
        source: Debian WordNet directory used when nltk has no WordNet.

    Returns:
        SynonymTable; ``build_record["wordnet_coverage"]`` holds :func:`wordnet_entry_coverage`.

    Raises:
        ValueError: unknown engine. TypeError: ``symmetric`` is not a bool.
        LookupError: WordNet is not installed (names both ways to install it).
    """
    if engine not in ("fast", "nltk"):
        raise ValueError(f"engine: expected 'fast' or 'nltk', got {engine!r}")
    ctx = begin_build(vocab, stopwords=stopwords, symmetric=symmetric, family=family, lowercase=lowercase)
    if engine == "fast":
        database = open_wordnet_database(find_wordnet_root(source))
        synonym_sets, version = database.synonym_sets, database.version
    else:
        wordnet = load_wordnet(source)
        synonym_sets, version = nltk_synonym_sets(wordnet), wordnet_version(wordnet)
    rows = wordnet_synonym_lists(ctx.words, ctx.key_ids, synonym_sets, progress=progress)
    coverage = wordnet_entry_coverage(ctx.words, ctx.stopwords, synonym_sets)
    options = {"engine": engine, "stopwords": ctx.stopwords_option, "multiword_lemmas": "dropped", "morphy": True,
               "symmetric": ctx.symmetric}
    return finish_build(ctx, rows, source="wordnet", version=version, options=options, wordnet_coverage=coverage)


def wordnet_version(wordnet: Any) -> str:
    """Version string of a loaded nltk WordNet reader, e.g. ``"3.0"``."""
    return str(wordnet.get_version())
