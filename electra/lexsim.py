"""Word-similarity benchmarks of an embedding table: SimLex-999 and WordSim-353.

The score is the Spearman correlation between the cosine similarity of the two words' input embeddings and the
human rating, over the pairs whose two words are each one token of the tokenizer (the tokenizer's own
normalisation decides: an uncased WordPiece vocabulary lower-cases "CD" to "cd"; a word split into pieces or
mapped to the unknown token is left out), reported with the number of pairs used.

The files come from gensim's wheel, found where ``gensim.test.utils.datapath`` finds them (without importing
gensim, which takes seconds): ``simlex999.txt`` and ``wordsim353.tsv``, both ``word1<TAB>word2<TAB>score`` lines
after ``#`` comment lines.  gensim is in the ``[eval]`` extra.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from electra.metrics import spearman

__all__ = ["BENCHMARKS", "GENSIM_MISSING", "load_pairs", "similarity_scores", "single_token_ids"]

BENCHMARKS = {"simlex999": "simlex999.txt", "wordsim353": "wordsim353.tsv"}
GENSIM_MISSING = "gensim not installed: pip install 'tnops[eval]'"


def _benchmark_path(name: str) -> Path:
    # gensim's own datapath() would import gensim (seconds); the files are found in its package folder instead
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(GENSIM_MISSING)
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / BENCHMARKS[name]
    if not path.is_file():
        raise ImportError(f"{GENSIM_MISSING} (this gensim has no {path})")
    return path


def load_pairs(name) -> list[tuple[str, str, float]]:
    """The word pairs of a benchmark: ``[(word1, word2, human score), ...]`` in file order.

    Args:
        name: ``"simlex999"`` or ``"wordsim353"`` (the file from gensim's wheel), or the path of a file in their
            format: lines ``word1<TAB>word2<TAB>score`` (any whitespace separates), blank lines and lines starting
            with ``#`` skipped.
    Raises:
        ImportError: a benchmark name and gensim is not installed (message :data:`GENSIM_MISSING`).
        FileNotFoundError: a path that does not exist.
        ValueError: a line that is not two words and a finite number (naming the file and line).
    """
    if isinstance(name, str) and name in BENCHMARKS:
        path = _benchmark_path(name)
    elif isinstance(name, (str, Path)):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"name: expected {' or '.join(map(repr, BENCHMARKS))} or an existing file, "
                                    f"got {str(name)!r}")
    else:
        raise TypeError(f"name: expected a benchmark name or a path, got {type(name).__name__}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t") if line.count("\t") == 2 else line.split()
        try:
            first, second, score = (field.strip() for field in fields)
            value = float(score)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected 'word1<TAB>word2<TAB>score', got {line!r}") from None
        if not first or not second or value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{path}:{number}: expected two words and a finite score, got {line!r}")
        pairs.append((first, second, value))
    if not pairs:
        raise ValueError(f"{path}: holds no word pairs")
    return pairs


def single_token_ids(tokenizer, words) -> list[int | None]:
    """For each word, its id when the tokenizer makes it exactly one known token (after its own normalisation,
    e.g. lower-casing for an uncased vocabulary), else None; one batched tokenizer call over the distinct words."""
    distinct = sorted(set(words))
    encoded = tokenizer(distinct, add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"] if distinct else []
    unknown = getattr(tokenizer, "unk_token_id", None)
    found = {word: ids[0] if len(ids) == 1 and ids[0] != unknown else None for word, ids in zip(distinct, encoded)}
    return [found[word] for word in words]


def similarity_scores(embeddings: torch.Tensor, tokenizer, pairs) -> tuple[float, int]:
    """Spearman correlation of embedding cosine similarity with the human scores.

    Args:
        embeddings: float ``[V, E]``, row i the vector of token id i (e.g. the shared input word embeddings).
        tokenizer: a transformers tokenizer of the same vocabulary (``tokenize``, ``convert_tokens_to_ids``).
        pairs: ``[(word1, word2, score), ...]`` (:func:`load_pairs`).
    Returns:
        ``(rho, n_pairs)``: the correlation over the ``n_pairs`` pairs whose two words are each a single token.
    Raises:
        ValueError: fewer than 2 usable pairs, or all their cosines or scores equal (the correlation is undefined).
        TypeError: ``embeddings`` is not a 2-D floating tensor.
    """
    if not isinstance(embeddings, torch.Tensor) or not embeddings.is_floating_point() or embeddings.dim() != 2:
        raise TypeError(f"embeddings: expected a floating [V, E] torch.Tensor, got "
                        f"{getattr(embeddings, 'shape', type(embeddings).__name__)}")
    vocab_size = embeddings.shape[0]
    pairs = list(pairs)
    ids = single_token_ids(tokenizer, [word for first, second, _ in pairs for word in (first, second)])
    firsts, seconds, scores = [], [], []
    for a, b, (_, _, score) in zip(ids[0::2], ids[1::2], pairs):
        if a is not None and b is not None and a < vocab_size and b < vocab_size:
            firsts.append(a)
            seconds.append(b)
            scores.append(float(score))
    if len(scores) < 2:
        raise ValueError(f"pairs: only {len(scores)} of {len(pairs)} pairs have both words as single tokens of the "
                         "tokenizer; a correlation needs at least 2")
    rows = lambda ids: embeddings.detach()[torch.tensor(ids, device=embeddings.device)].double().cpu()
    cosines = torch.nn.functional.cosine_similarity(rows(firsts), rows(seconds), dim=1, eps=1e-12)
    return spearman(cosines, scores), len(scores)
