"""SynonymTable: a CSR synonym relation over a tokenizer's vocabulary (DESIGN §2, §3).

Storage is CSR: ``offsets`` int32 [V+1] and ``ids`` int32 [nnz]; the synonyms of token ``t`` are
``ids[offsets[t]:offsets[t+1]]``, sorted ascending, without duplicates and without ``t`` itself.
Membership tests (the hot path of hard correction) use a third, derived array ``pair_keys`` int64
[nnz] = ``row * V + id``. Because rows ascend and ids ascend inside a row, it is globally sorted, so
``is_synonym`` is one ``torch.searchsorted`` over any number of (gold, pred) pairs, on any device,
with no Python loop and no host synchronisation.

The relation is directed: S[a] may list b while S[b] does not list a (stop-words are never keys,
WordNet's morphy maps inflections one way, thesaurus entries and nearest neighbours are not mutual);
``symmetrized()`` or the builders' ``symmetric=True`` add the reverse pairs.

A table remembers the sha256 of the vocabulary it was built for; ``load(path, vocab)`` refuses a
table built for a different tokenizer. Its ``build_record`` says how it was made (source, source
version, options, counts); the builders live with their sources (wordnet.py, mythes.py,
embeddings.py) and share the skeleton in build.py, imported here only when a ``from_*`` method runs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .csr import CSRView, pair_keys_contain
from .table_io import FORMAT_NAME, FORMAT_VERSION, load_table, save_table  # noqa: F401  (FORMAT_*: re-exported)
from .vocab import load_vocab, vocabulary_hash


def _as_index_tensor(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected an int32 torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided or value.is_nested:  # sparse ids would crash the first min()/searchsorted
        raise ValueError(f"{name}: expected a dense (strided) tensor, got layout "
                         f"{'nested' if value.is_nested else value.layout}")
    if value.dtype != torch.int32:
        raise ValueError(f"{name}: expected dtype torch.int32, got {value.dtype}")
    if value.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D tensor, got shape {tuple(value.shape)}")
    return value


class SynonymTable:
    """Synonyms of every token of a V-token vocabulary, in CSR form.

    Args:
        offsets: int32 [V+1], ``offsets[0] == 0``, non-decreasing, ``offsets[V] == nnz``.
        ids: int32 [nnz], values in [0, V); each row ascending, no duplicates, no self-pairs.
        vocab_hash: sha256 of the vocabulary (see :func:`~tnops.synonyms.vocab.vocabulary_hash`), or
            None when unknown (then ``load(path, vocab)`` cannot verify it and refuses).
        tokens: optional id-ordered token strings (length V); kept so that ``synonyms_of_word`` and the
            CLI work from a saved file alone. Their hash must equal ``vocab_hash`` when both are given.
        build_record: dict describing how the table was built (``source``, ``version``, ``options``...).
        num_candidates: how many tokens could have been keys (whole words, not stop-words); the
            denominator of :meth:`coverage`. Default: V.

    Raises:
        TypeError: offsets/ids are not tensors, tokens not a sequence of str.
        ValueError: wrong dtype or shape, offsets not monotone, ids out of range, unsorted or
            duplicated rows, self-pairs, or a tokens/vocab_hash mismatch.
    """

    def __init__(self, offsets: torch.Tensor, ids: torch.Tensor, *, vocab_hash: str | None = None,
                 tokens=None, build_record: dict | None = None, num_candidates: int | None = None,
                 _validate: bool = True) -> None:
        self.offsets = _as_index_tensor(offsets, "offsets")
        self.ids = _as_index_tensor(ids, "ids")
        if self.offsets.numel() < 1:
            raise ValueError("offsets: expected V+1 >= 1 entries, got an empty tensor")
        if self.offsets.device != self.ids.device:
            raise ValueError(f"offsets and ids must be on one device, got {self.offsets.device} and {self.ids.device}")
        self.vocab_size = self.offsets.numel() - 1
        self.num_pairs = self.ids.numel()
        if tokens is not None:
            if not all(isinstance(token, str) for token in tokens):
                raise TypeError("tokens: expected a sequence of str (index = token id)")
            tokens = tuple(tokens)
            if len(tokens) != self.vocab_size:
                raise ValueError(f"tokens: expected {self.vocab_size} tokens (offsets has V+1 entries), "
                                 f"got {len(tokens)}")
            if vocab_hash is None:
                vocab_hash = vocabulary_hash(tokens)
            elif vocab_hash != vocabulary_hash(tokens):
                raise ValueError("tokens: their hash differs from vocab_hash; the table and the tokens disagree")
        self.tokens = tokens
        self.vocab_hash = vocab_hash
        if build_record is not None and not isinstance(build_record, dict):
            raise TypeError(f"build_record: expected a dict or None, got {type(build_record).__name__}")
        self.build_record = dict(build_record or {})
        if num_candidates is not None and (isinstance(num_candidates, bool)
                                           or not isinstance(num_candidates, (int, np.integer))
                                           or num_candidates < 0):
            raise ValueError(f"num_candidates: expected an int >= 0 or None, got {num_candidates!r}")
        self.num_candidates = self.vocab_size if num_candidates is None else int(num_candidates)
        self._words = None  # whole-word analysis of the tokens, made on first word lookup
        if _validate:
            self._validate()
        rows = torch.repeat_interleave(
            torch.arange(self.vocab_size, device=self.ids.device, dtype=torch.int64),
            (self.offsets[1:] - self.offsets[:-1]).long(), output_size=self.num_pairs)
        # pair_keys = row*V + id, sorted; one sentinel V*V (larger than any real key) is appended so
        # searchsorted's result is always a valid index, even for an empty table.
        sentinel = torch.full((1,), self.vocab_size * self.vocab_size, dtype=torch.int64, device=self.ids.device)
        self._keys_with_sentinel = torch.cat([rows * self.vocab_size + self.ids.long(), sentinel])
        self._num_keys = int((self.offsets[1:] > self.offsets[:-1]).sum()) if _validate else None
        self._device_copies = {}

    # ------------------------------------------------------------------ construction helpers
    def _validate(self) -> None:
        offsets = self.offsets.cpu().long()
        ids = self.ids.cpu().long()
        if offsets[0] != 0:
            raise ValueError(f"offsets: offsets[0] must be 0, got {int(offsets[0])}")
        if offsets[-1] != self.num_pairs:
            raise ValueError(f"offsets: offsets[V] must equal len(ids) = {self.num_pairs}, got {int(offsets[-1])}")
        if (offsets[1:] < offsets[:-1]).any():
            raise ValueError("offsets: must be non-decreasing (row lengths are offsets[t+1] - offsets[t] >= 0)")
        if self.num_pairs and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids: every id must lie in [0, {self.vocab_size}), "
                             f"got range [{int(ids.min())}, {int(ids.max())}]")
        rows = torch.repeat_interleave(torch.arange(self.vocab_size), offsets[1:] - offsets[:-1])
        if (rows == ids).any():
            token = int(rows[rows == ids][0])
            raise ValueError(f"ids: token {token} lists itself as a synonym (self-pairs are not allowed)")
        same_row = rows[1:] == rows[:-1]
        if (same_row & (ids[1:] <= ids[:-1])).any():
            token = int(rows[1:][same_row & (ids[1:] <= ids[:-1])][0])
            raise ValueError(f"ids: the row of token {token} is not strictly ascending (unsorted or duplicated ids)")

    @classmethod
    def from_pairs(cls, keys, values, vocab_size: int, **kwargs) -> SynonymTable:
        """Table from (key, value) pairs in any order; repeats and self-pairs are dropped.

        Args:
            keys, values: integer sequences/arrays/tensors of equal length [P] with ids in [0, vocab_size).
            vocab_size: V.
            **kwargs: passed to the constructor (vocab_hash, tokens, build_record, num_candidates).

        Raises:
            TypeError: vocab_size is not an int.
            ValueError: lengths differ, vocab_size < 1, or an id lies outside [0, vocab_size).
        """
        if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size: expected an int, got {type(vocab_size).__name__}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size: expected >= 1, got {vocab_size}")
        keys = np.asarray(keys.cpu() if isinstance(keys, torch.Tensor) else keys, dtype=np.int64).reshape(-1)
        values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=np.int64).reshape(-1)
        if keys.shape != values.shape:
            raise ValueError(f"keys and values: expected equal lengths, got {keys.size} and {values.size}")
        for name, array in (("keys", keys), ("values", values)):
            if array.size and (array.min() < 0 or array.max() >= vocab_size):
                raise ValueError(f"{name}: ids must lie in [0, {vocab_size}), got range [{array.min()}, {array.max()}]")
        # np.unique sorts row*V + id, which orders by row then id and removes repeats in one pass.
        pair_keys = np.unique((keys * vocab_size + values)[keys != values])
        rows = pair_keys // vocab_size
        counts = np.bincount(rows, minlength=vocab_size)
        offsets = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        ids = torch.from_numpy((pair_keys % vocab_size).astype(np.int32))
        return cls(torch.from_numpy(offsets.astype(np.int32)), ids, **kwargs)

    @classmethod
    def from_rows(cls, rows: dict, vocab_size: int, **kwargs) -> SynonymTable:
        """Table from ``{key_id: iterable of synonym ids}``; rows are sorted and deduplicated."""
        if not isinstance(rows, dict):
            raise TypeError(f"rows: expected a dict {{key id: synonym ids}}, got {type(rows).__name__}")
        keys = [key for key, values in rows.items() for _ in values]
        values = [value for values in rows.values() for value in values]
        return cls.from_pairs(keys, values, vocab_size, **kwargs)

    # ------------------------------------------------------------------ builders (DESIGN §2)
    @classmethod
    def from_wordnet(cls, vocab, **options) -> SynonymTable:
        """WordNet synonym table; see :func:`tnops.synonyms.wordnet.build_wordnet_table`."""
        from .wordnet import build_wordnet_table

        return build_wordnet_table(vocab, **options)

    @classmethod
    def from_mythes(cls, dat_path, vocab, **options) -> SynonymTable:
        """LibreOffice-thesaurus table; see :func:`tnops.synonyms.mythes.build_mythes_table`."""
        from .mythes import build_mythes_table

        return build_mythes_table(dat_path, vocab, **options)

    @classmethod
    def from_embeddings(cls, vectors, vocab, k: int = 10, threshold: float | None = None, **options) -> SynonymTable:
        """Top-k cosine-neighbour table; see :func:`tnops.synonyms.embeddings.build_embedding_table`."""
        from .embeddings import build_embedding_table

        return build_embedding_table(vectors, vocab, k=k, threshold=threshold, **options)

    # ------------------------------------------------------------------ queries
    @property
    def device(self) -> torch.device:
        return self.ids.device

    @property
    def pair_keys(self) -> torch.Tensor:
        """int64 [nnz], sorted: ``row * V + id`` of every pair (for kernels doing their own lookup)."""
        return self._keys_with_sentinel[:-1]

    @property
    def num_keys(self) -> int:
        """Number of tokens with at least one synonym."""
        if self._num_keys is None:
            self._num_keys = int((self.offsets[1:] > self.offsets[:-1]).sum())
        return self._num_keys

    def row_lengths(self) -> torch.Tensor:
        """int64 [V]: number of synonyms of every token."""
        return (self.offsets[1:] - self.offsets[:-1]).long()

    def coverage(self) -> float:
        """Fraction of candidate keys that have at least one synonym in the table.

        ``coverage() = num_keys / num_candidates``, where a candidate is a token that may be a key:
        a whole-word token (not a ``##`` continuation, special token, punctuation or number) whose
        lower-case form is not a stop-word, and ``num_keys`` counts tokens with >= 1 synonym. For the
        WordNet table of bert-base-uncased: 13,293 / 22,381 = 59.39 %.

        The paper's figure (footnote 5: 62.51 % of the non-stop-word tokens "have a WordNet entry")
        counts differently and is kept in ``build_record["wordnet_coverage"]`` of WordNet tables:
        tokens with >= 1 synset through nltk's ``wn.synsets`` (morphy applied; ``##`` pieces and
        numbers included, in-vocabulary synonyms not required) over all tokens that are not
        stop-words: 18,987 / 30,372 = 62.51 %.

        Returns:
            float in [0, 1] (0.0 when there are no candidates).
        """
        return self.num_keys / self.num_candidates if self.num_candidates else 0.0

    def synonyms(self, token_id: int) -> list:
        """Synonym ids of one token, ascending.

        Args:
            token_id: int in [0, V).

        Returns:
            list[int] (empty when the token has no synonyms).

        Raises:
            TypeError: token_id is not an int. ValueError: it lies outside [0, V).
        """
        if isinstance(token_id, torch.Tensor) and token_id.numel() == 1 and not token_id.is_floating_point():
            token_id = int(token_id)
        if not isinstance(token_id, (int, np.integer)) or isinstance(token_id, bool):
            raise TypeError(f"token_id: expected an int, got {type(token_id).__name__}")
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token_id: expected an id in [0, {self.vocab_size}), got {token_id}")
        start, end = self.offsets[token_id : token_id + 2].tolist()
        return self.ids[start:end].tolist()

    def is_synonym(self, gold: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Elementwise ``pred ∈ S[gold]``, vectorised, without host synchronisation.

        Args:
            gold: integer tensor of any shape (e.g. labels [B, L]); ids outside [0, V) such as
                ignore_index -100 give False.
            pred: integer tensor broadcastable with ``gold`` (same device).

        Returns:
            bool tensor of the broadcast shape, on gold's device. ``is_synonym(t, t)`` is False.

        Raises:
            TypeError: an argument is not an integer tensor.
            ValueError: shapes do not broadcast, or gold and pred are on different devices.
        """
        for name, value in (("gold", gold), ("pred", pred)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name}: expected an integer torch.Tensor, got {type(value).__name__}")
            if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"{name}: expected an integer tensor (token ids), got dtype {value.dtype}")
        if gold.device != pred.device:
            raise ValueError(f"gold and pred: expected one device, got {gold.device} and {pred.device}")
        try:
            gold, pred = torch.broadcast_tensors(gold.long(), pred.long())
        except RuntimeError:
            raise ValueError(f"gold and pred: shapes {tuple(gold.shape)} and {tuple(pred.shape)} "
                             "do not broadcast") from None
        return pair_keys_contain(self._keys_on(gold.device), self.vocab_size, gold, pred)

    def csr_view(self, device: torch.device | None = None) -> CSRView:
        """The light ``CSRView`` (offsets, ids, pair keys) on ``device`` that backends receive; no validation,
        no copy when the table already lives there."""
        table = self if device is None else self.to(device)
        return CSRView(table.offsets, table.ids, table._keys_with_sentinel)

    def _keys_on(self, device: torch.device) -> torch.Tensor:
        if device == self._keys_with_sentinel.device:
            return self._keys_with_sentinel
        return self.to(device)._keys_with_sentinel

    def synonyms_of_word(self, word: str) -> list:
        """Synonym tokens of a word, looked up through the stored tokens (for inspection and the CLI).

        Returns:
            list[str]: the tokens listed for every token whose whole-word form is ``word``.

        Raises:
            ValueError: the table carries no tokens, or ``word`` is not a whole-word token.
        """
        from .tokens import analyze_vocabulary

        if self.tokens is None:
            raise ValueError("word lookup needs the vocabulary's tokens, and this table carries none")
        if not isinstance(word, str):
            raise TypeError(f"word: expected a str, got {type(word).__name__}")
        if self._words is None:
            vocabulary = self.build_record.get("vocabulary", {})
            self._words = analyze_vocabulary(list(self.tokens), family=vocabulary.get("family"),
                                             lowercase=vocabulary.get("lowercase"))
        ids = self._words.ids_of(word)
        if not ids:
            raise ValueError(f"word: {word!r} is not a whole-word token of this vocabulary")
        return [self.tokens[i] for token_id in ids for i in self.synonyms(token_id)]

    # ------------------------------------------------------------------ transforms
    def to(self, device) -> SynonymTable:
        """The same table with its tensors on ``device`` (self when already there; copies are cached,
        so calling ``table.to("cuda")`` every training step copies once)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device == self.device:
            return self
        copy = self._device_copies.get(device)
        if copy is None:
            copy = SynonymTable(self.offsets.to(device), self.ids.to(device), vocab_hash=self.vocab_hash,
                                tokens=self.tokens, build_record=self.build_record,
                                num_candidates=self.num_candidates, _validate=False)
            copy._num_keys = self._num_keys
            self._device_copies[device] = copy
        return copy

    def symmetrized(self) -> SynonymTable:
        """A table holding every pair in both directions (S ∪ Sᵀ); build record notes it."""
        rows = torch.repeat_interleave(torch.arange(self.vocab_size), self.row_lengths().cpu())
        ids = self.ids.cpu().long()
        record = dict(self.build_record, symmetrized=True)
        table = SynonymTable.from_pairs(torch.cat([rows, ids]), torch.cat([ids, rows]), self.vocab_size,
                                        vocab_hash=self.vocab_hash, tokens=self.tokens, build_record=record,
                                        num_candidates=self.num_candidates)
        return table.to(self.device)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the table to one file atomically (``torch.save`` of tensors and plain values), creating its folder.

        Raises:
            ValueError: ``path`` is a directory.
        """
        save_table(self, path)

    @classmethod
    def load(cls, path, vocab=None) -> SynonymTable:
        """Read a table written by :meth:`save` (``torch.load(weights_only=True)``: nothing in the file is run).

        Args:
            path: file path.
            vocab: optional vocabulary (anything ``load_vocab`` accepts); when given, its hash must
                equal the table's, so a table built for another tokenizer is refused.

        Raises:
            ValueError: the file is missing, corrupt, not a saved SynonymTable, lacks a key or holds an
                invalid table (naming the file), or the vocabulary hash differs (naming both hashes).
        """
        table = load_table(cls, path)
        if vocab is not None:
            table.check_vocab(vocab)
        return table

    def check_vocab(self, vocab) -> None:
        """Raise ValueError unless ``vocab`` (anything ``load_vocab`` accepts) is the table's vocabulary."""
        expected = load_vocab(vocab).hash
        if self.vocab_hash is None:
            raise ValueError(f"vocab: the table records no vocabulary hash, so it cannot be checked against {expected}")
        if expected != self.vocab_hash:
            raise ValueError(f"vocab: the table was built for vocabulary hash {self.vocab_hash}, "
                             f"but the given vocabulary hashes to {expected}; rebuild the table for this tokenizer")

    def __repr__(self) -> str:
        source = self.build_record.get("source", "custom")
        version = self.build_record.get("version")
        source = f"{source} {version}" if version else source
        return (f"SynonymTable(vocab_size={self.vocab_size}, keys={self.num_keys}, pairs={self.num_pairs}, "
                f"coverage={self.coverage():.2%}, source={source!r}, device={self.device})")

