"""Which vocabulary tokens are whole words, and how words map back to token ids (DESIGN §3).

Three tokenizer families are recognised from the tokens themselves:

* ``wordpiece`` (BERT, ELECTRA): ``word`` starts a word, ``##piece`` continues one. A plain list of
  words with no markers at all is treated as WordPiece without continuations.
* ``sentencepiece`` (ALBERT, T5, XLNet, Llama): ``▁word`` starts a word; a piece without ``▁``
  continues one.
* ``bytebpe`` (GPT-2, RoBERTa): tokens are UTF-8 bytes spelled with GPT-2's byte→unicode table;
  ``Ġword`` is `` word`` (a word after a space); a token without ``Ġ`` continues a word or starts
  the text, and is not used.

A token is a *whole word* when, after removing its word-start marker, it is one or more letters
(any script), optionally joined by inner ``-`` or ``'``. Special tokens (``[CLS]``, ``<s>``,
``[unused12]``, ``<|endoftext|>``, ``<0x0A>``), continuations, punctuation and numbers are never
words, so they are never keys or values of a synonym table. Uncased vocabularies are matched in
lower case; cased ones exactly.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from ..io import read_utf8_text
from .vocab import Vocabulary, load_vocab

_DATA_DIR = Path(__file__).resolve().parent / "data"
FAMILIES = ("wordpiece", "sentencepiece", "bytebpe")
_WORDPIECE_CONTINUATION = "##"
_SENTENCEPIECE_SPACE = "▁"  # U+2581
_BYTEBPE_SPACE = "Ġ"  # U+0120, GPT-2's spelling of byte 0x20

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_SPECIAL = re.compile(r"\[[^\[\]]+\]|<[^<>]+>|<\|[^|]*\|>")


def _gpt2_unicode_to_byte() -> dict:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable bytes keep their code point, the other
    68 bytes are moved to U+0100.. in byte order (this is why a space is spelled ``Ġ``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + shift)] = b
            shift += 1
    return mapping


_UNICODE_TO_BYTE = _gpt2_unicode_to_byte()


def detect_family(tokens: Iterable[str]) -> str:
    """Tokenizer family of a vocabulary: ``"wordpiece"``, ``"sentencepiece"`` or ``"bytebpe"``.

    Args:
        tokens: the vocabulary's token strings.

    Returns:
        The family whose marker (``##``, ``▁``, ``Ġ``) starts the most tokens; ``"wordpiece"`` when
        no token carries a marker (a plain word list).
    """
    counts = dict.fromkeys(FAMILIES, 0)
    for token in tokens:
        if token.startswith(_WORDPIECE_CONTINUATION) and len(token) > 2:
            counts["wordpiece"] += 1
        elif token.startswith(_SENTENCEPIECE_SPACE):
            counts["sentencepiece"] += 1
        elif token.startswith(_BYTEBPE_SPACE):
            counts["bytebpe"] += 1
    best = max(FAMILIES, key=lambda family: counts[family])
    return best if counts[best] > 0 else "wordpiece"


def is_special_token(token: str) -> bool:
    """True for bracketed control tokens such as ``[CLS]``, ``[unused12]``, ``<s>``, ``<|endoftext|>``."""
    return _SPECIAL.fullmatch(token) is not None


def _decode_bytebpe(token: str) -> str | None:
    try:
        raw = bytes(_UNICODE_TO_BYTE[ch] for ch in token)
        return raw.decode("utf-8")
    except (KeyError, UnicodeDecodeError):  # not a byte-level spelling, or a partial UTF-8 sequence
        return None


def token_word(token: str, family: str) -> str | None:
    """The word a token stands for, or None when the token is not a whole word.

    Args:
        token: one vocabulary token, e.g. ``"main"``, ``"##s"``, ``"▁main"``, ``"Ġmain"``, ``"[CLS]"``.
        family: ``"wordpiece"``, ``"sentencepiece"`` or ``"bytebpe"`` (see :func:`detect_family`).

    Returns:
        The word without its word-start marker and in the token's own case (``"main"`` for all three
        spellings above), or None for continuations, special tokens, punctuation and numbers.

    Raises:
        ValueError: ``family`` is not one of :data:`FAMILIES`.
    """
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    if not token or is_special_token(token):
        return None
    if family == "wordpiece":
        word = None if token.startswith(_WORDPIECE_CONTINUATION) else token
    elif family == "sentencepiece":
        word = token[1:] if token.startswith(_SENTENCEPIECE_SPACE) else None
    else:
        text = _decode_bytebpe(token)
        word = text[1:] if text is not None and text.startswith(" ") else None
    if word is None or _WORD.fullmatch(word) is None:
        return None
    return word


def token_text(token: str, family: str) -> str:
    """A token's text without its word-start marker: ``"▁main"``/``"Ġmain"`` -> ``"main"``; WordPiece
    tokens (``"##s"`` included) and pieces without a marker are returned unchanged (byte-BPE decoded).

    Raises:
        ValueError: ``family`` is not one of :data:`FAMILIES`.
    """
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    if family == "sentencepiece":
        return token[1:] if token.startswith(_SENTENCEPIECE_SPACE) else token
    if family == "bytebpe":
        text = _decode_bytebpe(token)
        if text is None:
            return token
        return text[1:] if text.startswith(" ") else text
    return token


def load_stopwords(stopwords: None | bool | str | PathLike | Iterable[str] = None) -> frozenset:
    """The stop-word set used to exclude keys.

    Args:
        stopwords: ``None``, ``True`` or ``"english"``: nltk's English list (179 words, shipped in
            ``tnops/synonyms/data/english_stopwords.txt`` because nltk's corpus may not be
            downloadable); ``False``: no stop-words; a path to a file (one word per line); or an
            iterable of str.

    Returns:
        frozenset of lower-case words.

    Raises:
        TypeError: ``stopwords`` is of another type.
        ValueError: the path does not exist.
    """
    if stopwords is None or stopwords is True or stopwords == "english":
        text = (_DATA_DIR / "english_stopwords.txt").read_text("utf-8")
        return frozenset(line.strip() for line in text.split("\n") if line.strip())
    if stopwords is False:
        return frozenset()
    if isinstance(stopwords, (str, PathLike)):
        path = Path(stopwords)
        if not path.is_file():
            raise ValueError(f"stopwords: {str(path)!r} is neither 'english' nor an existing file of words")
        text = read_utf8_text(path, what="stop-word file", argument="stopwords")
        return frozenset(line.strip().lower() for line in text.split("\n") if line.strip())
    if isinstance(stopwords, Iterable):
        words = list(stopwords)
        if not all(isinstance(word, str) for word in words):
            raise TypeError("stopwords: an iterable of stop-words must hold only str")
        return frozenset(word.lower() for word in words)
    raise TypeError(
        f"stopwords: expected None/True/'english', False, a path or an iterable of str; got {type(stopwords).__name__}"
    )


@dataclass
class VocabularyWords:
    """The whole-word view of a vocabulary.

    Attributes:
        vocab: the underlying :class:`~tnops.synonyms.vocab.Vocabulary` (V tokens).
        family: ``"wordpiece"``, ``"sentencepiece"`` or ``"bytebpe"``.
        lowercase: True when words are matched in lower case (uncased vocabulary).
        words: list of length V; ``words[i]`` is the matching form of token i (lower-cased for
            uncased vocabularies) or None when token i is not a whole word.
    """

    vocab: Vocabulary
    family: str
    lowercase: bool
    words: list
    _ids_by_word: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for token_id, word in enumerate(self.words):
            if word is not None:
                self._ids_by_word.setdefault(word, []).append(token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def normalize(self, word: str) -> str:
        """The matching form of a word: lower-cased for an uncased vocabulary, unchanged otherwise."""
        return word.lower() if self.lowercase else word

    def ids_of(self, word: str) -> list:
        """Token ids (ascending) whose whole-word form is ``word`` (after :meth:`normalize`); [] if none.

        One word usually maps to one id; a cased list vocabulary may hold the same word twice.
        """
        return self._ids_by_word.get(self.normalize(word), [])

    def key_ids(self, stopwords: frozenset) -> list:
        """Ids of tokens that may be keys: whole words whose lower-case form is not a stop-word."""
        return [i for i, word in enumerate(self.words) if word is not None and word.lower() not in stopwords]


def analyze_vocabulary(vocab, family: str | None = None, lowercase: bool | None = None) -> VocabularyWords:
    """Whole-word analysis of a vocabulary (family, casedness, word of every token).

    Args:
        vocab: anything :func:`~tnops.synonyms.vocab.load_vocab` accepts (tokenizer, path, name, list).
        family: force a family instead of detecting it (see :func:`detect_family`).
        lowercase: force matching in lower case (True) or exactly (False). By default the
            tokenizer's own flag is used, else the vocabulary counts as uncased when no whole-word
            token contains an upper-case letter.

    Returns:
        VocabularyWords.

    Raises:
        ValueError: ``family`` is not one of :data:`FAMILIES`.
        TypeError: ``lowercase`` is not a bool or None.
    """
    vocab = load_vocab(vocab)
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES} or None, got {family!r}")
    if lowercase is not None and not isinstance(lowercase, bool):
        raise TypeError(f"lowercase: expected a bool or None, got {type(lowercase).__name__}")
    family = family or detect_family(vocab.tokens)
    raw_words = [token_word(token, family) for token in vocab.tokens]
    if lowercase is None:
        lowercase = vocab.lowercase
    if lowercase is None:
        lowercase = not any(word is not None and word != word.lower() for word in raw_words)
    words = [None if word is None else (word.lower() if lowercase else word) for word in raw_words]
    return VocabularyWords(vocab, family, lowercase, words)
