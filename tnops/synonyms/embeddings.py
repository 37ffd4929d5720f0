"""Embedding-neighbour synonym tables (paper §5, "Word2Vec/GloVe top-10"; DESIGN §1).

S[w] = the k vocabulary words nearest to w by cosine similarity, optionally only those with cosine
>= threshold. Vectors come from a GloVe/word2vec text file (word2vec's first line is a
``count dim`` header, GloVe has none) or from a ``[V, D]`` tensor aligned with the vocabulary
(e.g. a model's own word-embedding table). Keys and values follow DESIGN §3: whole-word tokens
only, stop-words never keys (they may be neighbours).

The search is a chunked matmul: rows of keys are multiplied against all candidate vectors a chunk at
a time and reduced with ``topk`` at once, so memory is O(chunk · V), never [V, V] (30k × 30k would
be 3.6 GB in fp32). Nearest neighbours are not mutual, so the table is directed unless
``symmetric=True``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .build import begin_build, finish_build
from .table import SynonymTable

# Query rows per block are chosen so one similarity block holds about this many floats. On CPU the
# block is written and then scanned by topk, so it should stay cache-sized: 8 MiB blocks measured 1.8 s
# for 22.5k x 22.5k on 2 cores against 7.5 s for 64 MiB blocks. GPUs want large blocks (256 MiB).
_SIMILARITY_BLOCK_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 26}


def read_word_vectors(path: str | os.PathLike, keep: Callable[[str], bool] | None = None) -> tuple:
    """Read word vectors in GloVe or word2vec text format.

    Args:
        path: text file; one ``word v1 ... vD`` per line, optionally after a word2vec ``count dim`` header.
        keep: optional predicate on the word; lines whose word fails it are skipped without parsing
            their numbers (a 400k-word GloVe file mostly holds words outside a 30k vocabulary).

    Returns:
        ``(words, vectors)``: list[str] of length n and float32 tensor [n, D], in file order.

    Raises:
        ValueError: missing file, binary file, a line whose field count differs from D, or a header
            whose dimension disagrees with the rows (the line number is given).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"vectors: expected a path or a tensor, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"vectors: no such file {str(path)!r}")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise ValueError(f"vectors: {path} is not UTF-8 text; binary word2vec files must be converted to text "
                         "first") from None
    header = lines[0].split()
    dim = None
    start = 0
    if len(header) == 2 and all(field.isdigit() for field in header):  # word2vec: "count dim"
        dim, start = int(header[1]), 1
    words, rows = [], []
    for number, line in enumerate(lines[start:], start=start + 1):
        fields = line.rstrip().split(" ")
        if fields == [""]:
            continue
        if dim is None:
            dim = len(fields) - 1
        if len(fields) < dim + 1:
            raise ValueError(f"vectors: {path}:{number}: expected a word and {dim} numbers, got {len(fields)} fields")
        # GloVe's larger files hold a few words with spaces: the last D fields are the numbers.
        word = " ".join(fields[:-dim])
        if keep is not None and not keep(word):
            continue
        try:
            rows.append([float(value) for value in fields[-dim:]])
        except ValueError:
            raise ValueError(f"vectors: {path}:{number}: non-numeric value in the vector of {word!r}") from None
        words.append(word)
    if dim is None or dim < 1:
        raise ValueError(f"vectors: {path} holds no vectors")
    return words, torch.tensor(rows, dtype=torch.float32).reshape(len(rows), dim)


def nearest_neighbours(vectors: torch.Tensor, query_rows: torch.Tensor, k: int, threshold: float | None = None,
                       chunk_size: int | None = None, progress: bool = False) -> tuple:
    """Top-k cosine neighbours of some rows among all rows, chunked.

    Args:
        vectors: float [n, D]; rows with zero norm never match.
        query_rows: int64 [m], rows of ``vectors`` to find neighbours for; a row is never its own neighbour.
        k: neighbours per query (at most n-1 are returned).
        threshold: keep only neighbours with cosine >= threshold.
        chunk_size: query rows per matmul block (default: 8 MiB of similarities on CPU, 256 MiB on GPU).
        progress: show a tqdm progress bar over the blocks.

    Returns:
        ``(query, neighbour)`` int64 tensors [P] of row indices into ``vectors``.
    """
    n = vectors.shape[0]
    k = min(k, n - 1)
    if k < 1 or query_rows.numel() == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)  # zero rows stay zero: cosine 0, filtered below
    valid = unit.norm(dim=1) > 0
    invalid_rows = (~valid).nonzero().squeeze(1)  # build time, not a training step: a host sync is fine
    block = _SIMILARITY_BLOCK_ELEMENTS.get(vectors.device.type, _SIMILARITY_BLOCK_ELEMENTS["cuda"])
    chunk_size = chunk_size or max(1, block // n)
    queries, neighbours = [], []
    for start in tqdm(range(0, query_rows.numel(), chunk_size), desc="neighbours", unit="block", disable=not progress):
        rows = query_rows[start : start + chunk_size].to(vectors.device)
        similarity = unit[rows] @ unit.T  # [chunk, n]
        if invalid_rows.numel():
            similarity[:, invalid_rows] = -math.inf
        similarity[torch.arange(rows.numel(), device=rows.device), rows] = -math.inf  # never itself
        values, indices = similarity.topk(k, dim=1)
        keep = values > -math.inf
        if threshold is not None:
            keep &= values >= threshold
        keep &= valid[rows].unsqueeze(1)
        queries.append(rows.unsqueeze(1).expand_as(indices)[keep].cpu())
        neighbours.append(indices[keep].cpu())
    return torch.cat(queries), torch.cat(neighbours)


def build_embedding_table(vectors: str | os.PathLike | torch.Tensor, vocab: Any, *, k: int = 10,
                          threshold: float | None = None, stopwords: Any = None, symmetric: bool = False,
                          family: str | None = None, lowercase: bool | None = None,
                          device: torch.device | str | None = None, chunk_size: int | None = None,
                          progress: bool = False) -> SynonymTable:
    """Top-k cosine-neighbour table (``SynonymTable.from_embeddings``).

    Args:
        vectors: path to a GloVe/word2vec text file, or a float tensor [V, D] aligned with the vocabulary
            (row i = token i). File words are matched to whole-word tokens (lower-cased for an uncased
            vocabulary); when several file words map to one token, the first (most frequent) wins.
        vocab: tokenizer, vocab.txt/tokenizer.json path, known name or list[str] (V tokens).
        k: neighbours per key (int >= 1).
        threshold: optional minimum cosine in [-1, 1].
        stopwords: words that are never keys (default nltk's English list; False for none).
        symmetric: add every reverse pair.
        family, lowercase: override the vocabulary analysis.
        device: where to run the matmuls (default: the tensor's device, or CPU for a file).
        chunk_size: key rows per matmul block (default: 8 MiB of similarities on CPU, 256 MiB on GPU).
        progress: show a progress bar.

    Returns:
        SynonymTable.

    Raises:
        TypeError: vectors is neither a path nor a floating tensor; k not an int; threshold not a number;
            symmetric not a bool.
        ValueError: k < 1, threshold outside [-1, 1], tensor shape not [V, D], unreadable file.
    """
    if not isinstance(k, int) or isinstance(k, bool):
        raise TypeError(f"k: expected an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k: expected k >= 1, got {k}")
    if threshold is not None:
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            raise TypeError(f"threshold: expected a float or None, got {type(threshold).__name__}")
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: a cosine lies in [-1, 1], got {threshold}")
    ctx = begin_build(vocab, stopwords=stopwords, symmetric=symmetric, family=family, lowercase=lowercase)
    words = ctx.words
    if isinstance(vectors, torch.Tensor):
        if not vectors.is_floating_point() or vectors.dim() != 2:
            raise ValueError(f"vectors: expected a floating tensor [V, D], got {vectors.dtype} {tuple(vectors.shape)}")
        if vectors.shape[0] != words.vocab_size:
            raise ValueError(f"vectors: expected {words.vocab_size} rows (one per token), got {vectors.shape[0]}")
        # Only whole-word tokens are candidates (DESIGN §3), so only their rows enter the search.
        token_ids = torch.tensor([i for i, word in enumerate(words.words) if word is not None], dtype=torch.int64)
        matrix = vectors.detach()[token_ids.to(vectors.device)]
        source, version = "embeddings", f"tensor[{vectors.shape[0]},{vectors.shape[1]}]"
    elif isinstance(vectors, (str, os.PathLike)):
        file_words, file_vectors = read_word_vectors(vectors, keep=lambda word: bool(words.ids_of(word)))
        chosen_ids, chosen_rows = [], []
        taken = set()
        for row, word in enumerate(file_words):
            for token_id in words.ids_of(word):
                if token_id not in taken:
                    taken.add(token_id)
                    chosen_ids.append(token_id)
                    chosen_rows.append(row)
        token_ids = torch.tensor(chosen_ids, dtype=torch.int64)
        matrix = file_vectors[torch.tensor(chosen_rows, dtype=torch.int64)]
        source, version = "embeddings", Path(vectors).name
    else:
        raise TypeError(f"vectors: expected a path to a GloVe/word2vec text file or a float tensor [V, D], "
                        f"got {type(vectors).__name__}")
    if device is not None:
        matrix = matrix.to(device)
    stop_word = [words.words[i].lower() in ctx.stopwords for i in token_ids.tolist()]
    query_rows = torch.tensor([row for row, is_stop in enumerate(stop_word) if not is_stop], dtype=torch.int64)
    queries, neighbours = nearest_neighbours(matrix, query_rows, k, threshold, chunk_size, progress)
    options = {"k": k, "threshold": threshold, "symmetric": ctx.symmetric, "vectors_matched": len(token_ids),
               "stopwords": ctx.stopwords_option}
    return finish_build(ctx, (token_ids[queries], token_ids[neighbours]), source=source, version=version,
                        options=options)
