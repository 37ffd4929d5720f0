"""ELECTRA pre-training data: a corpus tokenized, packed (:mod:`electra.packing`), split and cached on disk.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from electra.batches import check_int
from electra.corpus import resolve_corpus
from electra.packing import PretrainingSplit, pack_examples
from electra.seeds import derive_seed
from electra.sentences import split_sentences
from electra.tokenizer import load_tokenizer, special_ids, tokenize, tokenizer_fingerprint

__all__ = ["BUILDER_VERSION", "PretrainingData", "build_dataset", "default_cache_dir"]

# Bump when packing or the eval split changes, so old caches are not reused.
# 2: packing and the eval split draw from electra.seeds streams (was random.Random(seed) / a string seed).
BUILDER_VERSION = 2
SHARD_EXAMPLES = 1 << 16
_DOCUMENTS_PER_TOKENIZER_CALL = 64  # batches sentences for the Rust tokenizer; progress updates per batch


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


def _tokenized_documents(documents: list[str], tokenizer, progress: bool) -> Iterator[list[list[int]]]:
    with tqdm(total=len(documents), desc="tokenizing", unit="doc", disable=not progress) as bar:
        for start in range(0, len(documents), _DOCUMENTS_PER_TOKENIZER_CALL):
            chunk = [split_sentences(d) for d in documents[start:start + _DOCUMENTS_PER_TOKENIZER_CALL]]
            ids = tokenize(tokenizer, [s for sentences in chunk for s in sentences])
            position = 0
            for sentences in chunk:
                yield ids[position:position + len(sentences)]
                position += len(sentences)
            bar.update(len(chunk))


def _split_eval(examples: PretrainingSplit, eval_fraction: float, seed: int):
    total = len(examples)
    count = 0 if eval_fraction == 0 or total < 2 else min(total - 1, max(1, round(total * eval_fraction)))
    held_out = torch.zeros(total, dtype=torch.bool)
    held_out[sorted(random.Random(derive_seed("eval-split", seed)).sample(range(total), count))] = True
    return examples.take((~held_out).nonzero().flatten()), examples.take(held_out.nonzero().flatten())


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
        tokenizer: see :func:`electra.tokenizer.load_tokenizer` (None: bert-base-uncased's WordPiece,
            30,522 tokens).
        max_seq_length: L, at least 8.
        cache_dir: root of the cache (default ``~/.cache/tnops/electra_data``); the data goes in a
            subdirectory named by a hash of the corpus identity (file paths, sizes and mtimes, a
            dataset name, or the documents' text), the tokenizer, L, seed, eval_fraction and
            BUILDER_VERSION.  ``False`` disables caching.
        seed: the run seed; packing and the eval split use its ``packing`` and ``eval-split`` streams.
        eval_fraction: share of examples held out, in [0, 1); when > 0 and there are >= 2 examples
            at least one is held out and at least one stays in train.
        progress: show a tqdm bar while tokenizing.
        pattern, column: passed to :func:`electra.corpus.load_documents`.

    Returns:
        PretrainingData: ``train`` and ``eval`` splits of ``[num_examples, L]`` tensors.
    """
    max_seq_length = check_int("max_seq_length", max_seq_length, 8)
    seed = check_int("seed", seed, 0)
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)):
        raise TypeError(f"eval_fraction: expected a float, got {type(eval_fraction).__name__}")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction: must be in [0, 1), got {eval_fraction}")
    tokenizer = load_tokenizer(tokenizer)
    specials = special_ids(tokenizer)
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
                             cls_id=specials["cls"], sep_id=specials["sep"], pad_id=specials["pad"], seed=seed)
    if len(examples) == 0:
        raise ValueError(f"corpus: {source.description} produced no tokens (empty corpus)")
    train, held_out = _split_eval(examples, eval_fraction, seed)
    meta = {"builder_version": BUILDER_VERSION, "corpus": source.description,
            "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
            "vocab_size": len(tokenizer), "special_ids": specials, "max_seq_length": max_seq_length,
            "seed": seed, "eval_fraction": float(eval_fraction), "num_documents": len(documents),
            "num_examples": {"train": len(train), "eval": len(held_out)},
            "num_tokens": {"train": train.num_tokens, "eval": held_out.num_tokens}, "recipe": recipe}
    if directory is not None:
        _write_cache(directory, {"train": train, "eval": held_out}, meta)
    return PretrainingData(train, held_out, tokenizer, directory, meta)
