"""SynonymTable: CSR invariants, constructor validation, is_synonym, persistence, devices."""
import re

import pytest
import torch

from tnops.synonyms import SynonymTable, vocabulary_hash

TOKENS = ["[PAD]", "main", "primary", "chief", "dog", "hound", "##s", "the"]


def small_table(**kwargs):
    # main <-> primary, chief ; dog -> hound (one-way on purpose)
    rows = {1: [3, 2, 2, 1], 2: [1], 3: [1], 4: [5]}
    return SynonymTable.from_rows(rows, len(TOKENS), tokens=TOKENS, **kwargs)


def random_table(vocab_size, density, seed):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(vocab_size, vocab_size, generator=generator) < density
    keys, values = mask.nonzero(as_tuple=True)
    return SynonymTable.from_pairs(keys, values, vocab_size), mask & ~torch.eye(vocab_size, dtype=torch.bool)


# ---------------------------------------------------------------- construction and invariants
def test_from_rows_sorts_deduplicates_and_drops_self_pairs():
    table = small_table()
    assert table.offsets.dtype == torch.int32 and table.ids.dtype == torch.int32
    assert table.offsets.tolist() == [0, 0, 2, 3, 4, 5, 5, 5, 5]
    assert table.synonyms(1) == [2, 3]  # sorted, the repeat of 2 and the self-pair 1 removed
    assert table.synonyms(4) == [5] and table.synonyms(5) == []  # direction kept
    assert (table.vocab_size, table.num_pairs, table.num_keys) == (8, 5, 4)


def test_pair_keys_are_sorted_row_major():
    table, _ = random_table(40, 0.2, seed=0)
    keys = table.pair_keys
    assert keys.dtype == torch.int64 and keys.numel() == table.num_pairs
    assert bool((keys[1:] > keys[:-1]).all())


@pytest.mark.parametrize("offsets, ids, message", [
    ([0, 1, 1], [1], None),  # valid: token 0 -> 1
    ([1, 1, 1], [], r"offsets: offsets\[0\] must be 0, got 1"),
    ([0, 2, 1, 2], [1, 2], "offsets: must be non-decreasing"),
    ([0, 1, 1], [1, 0], r"offsets\[V\] must equal len\(ids\) = 2"),
    ([0, 1, 1], [5], r"ids: every id must lie in \[0, 2\)"),
    ([0, 1, 1], [-1], r"ids: every id must lie in \[0, 2\)"),
    ([0, 1, 1], [0], "token 0 lists itself"),
    ([0, 2, 2, 2], [2, 1], "token 0 is not strictly ascending"),
    ([0, 2, 2, 2], [1, 1], "token 0 is not strictly ascending"),
])  # fmt: skip
def test_constructor_validates_csr(offsets, ids, message):
    make = lambda: SynonymTable(torch.tensor(offsets, dtype=torch.int32), torch.tensor(ids, dtype=torch.int32))
    if message is None:
        assert make().synonyms(0) == [1]
    else:
        with pytest.raises(ValueError, match=message):
            make()


def test_constructor_rejects_wrong_types_and_dtypes():
    ids = torch.tensor([1], dtype=torch.int32)
    with pytest.raises(TypeError, match="offsets: expected an int32 torch.Tensor, got list"):
        SynonymTable([0, 1, 1], ids)
    with pytest.raises(ValueError, match="offsets: expected dtype torch.int32, got torch.int64"):
        SynonymTable(torch.tensor([0, 1, 1]), ids)
    with pytest.raises(ValueError, match=r"ids: expected a 1-D tensor, got shape \(1, 1\)"):
        SynonymTable(torch.tensor([0, 1, 1], dtype=torch.int32), ids.reshape(1, 1))
    with pytest.raises(ValueError, match="offsets: expected V\\+1 >= 1 entries"):
        SynonymTable(torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int32))
    with pytest.raises(ValueError, match="tokens: expected 8 tokens"):
        small_table().__class__(small_table().offsets, small_table().ids, tokens=TOKENS[:3])
    with pytest.raises(ValueError, match="num_candidates: expected an int >= 0 or None, got -1"):
        SynonymTable(small_table().offsets, small_table().ids, num_candidates=-1)
    with pytest.raises(ValueError, match="tokens: their hash differs from vocab_hash"):
        SynonymTable(small_table().offsets, small_table().ids, tokens=TOKENS, vocab_hash="0" * 64)


def test_from_pairs_validates_arguments():
    with pytest.raises(TypeError, match="vocab_size: expected an int, got float"):
        SynonymTable.from_pairs([0], [1], 2.0)
    with pytest.raises(ValueError, match="vocab_size: expected >= 1, got 0"):
        SynonymTable.from_pairs([], [], 0)
    with pytest.raises(ValueError, match="keys and values: expected equal lengths, got 2 and 1"):
        SynonymTable.from_pairs([0, 1], [1], 3)
    with pytest.raises(ValueError, match=r"values: ids must lie in \[0, 3\), got range \[1, 3\]"):
        SynonymTable.from_pairs([0, 1], [1, 3], 3)
    with pytest.raises(TypeError, match="rows: expected a dict"):
        SynonymTable.from_rows([[1]], 3)


def test_empty_table():
    table = SynonymTable.from_pairs([], [], 5)
    assert table.num_pairs == 0 and table.num_keys == 0 and table.coverage() == 0.0
    gold = torch.tensor([0, 1, 4, -100])
    assert table.is_synonym(gold, gold.flip(0)).tolist() == [False] * 4


# ---------------------------------------------------------------- is_synonym
def test_is_synonym_matches_python_loop():
    vocab_size = 37
    table, dense = random_table(vocab_size, 0.15, seed=1)
    generator = torch.Generator().manual_seed(2)
    gold = torch.randint(-3, vocab_size + 3, (6, 50), generator=generator)
    pred = torch.randint(-3, vocab_size + 3, (6, 50), generator=generator)
    gold[0, :5] = -100  # ignore_index rows
    pred[1, :10] = gold[1, :10]  # r == y is never a synonym
    rows = {key: set(table.synonyms(key)) for key in range(vocab_size)}
    expected = [[0 <= g < vocab_size and p in rows[g] for g, p in zip(gs, ps)]
                for gs, ps in zip(gold.tolist(), pred.tolist())]
    result = table.is_synonym(gold, pred)
    assert result.dtype == torch.bool and result.shape == gold.shape
    assert result.tolist() == expected
    assert int(result.sum()) > 0  # the draw does hit synonyms, so the comparison is meaningful
    # the dense relation the table was built from agrees as well
    inside = (gold >= 0) & (gold < vocab_size) & (pred >= 0) & (pred < vocab_size)
    dense_hits = torch.zeros_like(result)
    dense_hits[inside] = dense[gold[inside], pred[inside]]
    assert torch.equal(result, dense_hits)


def test_is_synonym_broadcasts_and_accepts_int32():
    table = small_table()
    gold = torch.tensor([[1], [4], [-100]], dtype=torch.int32)  # [3, 1]
    pred = torch.tensor([2, 3, 5, 1])  # [4]
    assert table.is_synonym(gold, pred).tolist() == [
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, False],
    ]
    assert table.is_synonym(torch.tensor(1), torch.tensor(2)).item() is True  # 0-d


def test_is_synonym_errors():
    table = small_table()
    ids = torch.tensor([1, 2])
    with pytest.raises(TypeError, match="gold: expected an integer torch.Tensor, got list"):
        table.is_synonym([1, 2], ids)
    with pytest.raises(TypeError, match="pred: expected an integer tensor \\(token ids\\), got dtype torch.float32"):
        table.is_synonym(ids, ids.float())
    with pytest.raises(TypeError, match="gold: expected an integer tensor"):
        table.is_synonym(ids.bool(), ids)
    with pytest.raises(ValueError, match=re.escape("gold and pred: shapes (2,) and (3,) do not broadcast")):
        table.is_synonym(ids, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="gold and pred: expected one device"):
        table.is_synonym(ids, ids.to("meta"))


def test_is_synonym_traces_without_graph_breaks():
    table = small_table()
    compiled = torch.compile(lambda gold, pred: table.is_synonym(gold, pred), fullgraph=True, backend="eager")
    gold, pred = torch.tensor([1, 1, 4, -100]), torch.tensor([2, 4, 5, 2])
    assert compiled(gold, pred).tolist() == [True, False, True, False]


# ---------------------------------------------------------------- queries
def test_synonyms_errors_and_tensor_argument():
    table = small_table()
    assert table.synonyms(torch.tensor(1)) == [2, 3]
    with pytest.raises(TypeError, match="token_id: expected an int, got str"):
        table.synonyms("main")
    with pytest.raises(ValueError, match=r"token_id: expected an id in \[0, 8\), got 8"):
        table.synonyms(8)
    with pytest.raises(ValueError, match=r"token_id: expected an id in \[0, 8\), got -1"):
        table.synonyms(-1)


def test_coverage_counts_keys_over_candidates():
    table = small_table(num_candidates=5)
    assert table.coverage() == pytest.approx(4 / 5)
    assert small_table().coverage() == pytest.approx(4 / 8)  # no candidate count: every token


def test_synonyms_of_word_uses_stored_tokens():
    table = small_table()
    assert table.synonyms_of_word("main") == ["primary", "chief"]
    assert table.synonyms_of_word("MAIN") == ["primary", "chief"]  # uncased vocabulary: lower-case match
    with pytest.raises(ValueError, match="word: 'mainly' is not a whole-word token"):
        table.synonyms_of_word("mainly")
    bare = SynonymTable(table.offsets, table.ids)
    with pytest.raises(ValueError, match="carries none"):
        bare.synonyms_of_word("main")


def test_symmetrized_adds_reverse_pairs_only():
    table = small_table(build_record={"source": "test"})
    both = table.symmetrized()
    assert both.synonyms(5) == [4] and both.synonyms(1) == [2, 3]
    assert both.num_pairs == table.num_pairs + 1
    assert both.build_record["symmetrized"] is True and both.vocab_hash == table.vocab_hash



def test_build_skeleton_records_and_symmetrizes():
    import importlib

    from tnops.synonyms.build import begin_build, finish_build

    ctx = begin_build(TOKENS, stopwords=["the"], symmetric=True)
    assert ctx.key_ids == [1, 2, 3, 4, 5] and ctx.stopwords_option == ["the"] and ctx.symmetric is True
    options = {"rule": "test", "stopwords": ctx.stopwords_option, "symmetric": ctx.symmetric}
    table = finish_build(ctx, {4: [5, 7]}, source="test", version="1", options=options, extra=3)
    record = table.build_record
    assert (record["source"], record["version"], record["options"], record["extra"]) == ("test", "1", options, 3)
    assert record["num_candidates"] == table.num_candidates == 5 and record["symmetrized"] is True
    assert record["vocabulary"] == {"source": "list", "size": 8, "family": "wordpiece", "lowercase": True}
    assert table.synonyms(4) == [5, 7] and table.synonyms(5) == [4] and table.synonyms(7) == [4]
    assert begin_build(TOKENS).stopwords_option == "english"
    with pytest.raises(TypeError, match="symmetric: expected a bool, got str"):
        begin_build(TOKENS, symmetric="yes")
    # table.py holds the CSR structure only: the builders are imported when a from_* method runs.
    assert not hasattr(importlib.import_module("tnops.synonyms.table"), "table_from_build")

def test_repr_names_sizes_and_source():
    text = repr(small_table(build_record={"source": "wordnet", "version": "3.0"}, num_candidates=5))
    assert text == "SynonymTable(vocab_size=8, keys=4, pairs=5, coverage=80.00%, source='wordnet 3.0', device=cpu)"


# ---------------------------------------------------------------- devices
def test_to_same_device_returns_self_and_copies_are_cached():
    table = small_table()
    assert table.to("cpu") is table and table.to(torch.device("cpu")) is table
    meta = table.to("meta")
    assert meta.offsets.device.type == "meta" and meta.ids.device.type == "meta"
    assert table.to("meta") is meta  # second call reuses the copy instead of copying again


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_is_synonym_on_cuda_matches_cpu():
    table, _ = random_table(1000, 0.01, seed=3)
    generator = torch.Generator().manual_seed(4)
    gold = torch.randint(-100, 1000, (64, 128), generator=generator)
    pred = torch.randint(0, 1000, (64, 128), generator=generator)
    cuda = table.to("cuda")
    assert cuda.offsets.is_cuda and cuda.ids.is_cuda and cuda.pair_keys.is_cuda
    result = cuda.is_synonym(gold.cuda(), pred.cuda())
    assert result.is_cuda and torch.equal(result.cpu(), table.is_synonym(gold, pred))
    assert torch.equal(table.is_synonym(gold.cuda(), pred.cuda()).cpu(), result.cpu())  # CPU table, CUDA ids


# ---------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path):
    table = small_table(build_record={"source": "test", "version": "1", "options": {"k": 3}}, num_candidates=6)
    path = tmp_path / "table.pt"
    table.save(path)
    loaded = SynonymTable.load(path)
    assert torch.equal(loaded.offsets, table.offsets) and torch.equal(loaded.ids, table.ids)
    assert loaded.offsets.dtype == torch.int32 and loaded.ids.dtype == torch.int32
    assert loaded.vocab_hash == vocabulary_hash(TOKENS) and loaded.tokens == tuple(TOKENS)
    assert loaded.build_record == table.build_record and loaded.coverage() == table.coverage()
    assert SynonymTable.load(path, vocab=list(TOKENS)).num_pairs == 5  # same vocabulary: accepted


def test_load_refuses_another_vocabulary_naming_both_hashes(tmp_path):
    path = tmp_path / "table.pt"
    small_table().save(path)
    other = TOKENS[:-1] + ["a"]
    with pytest.raises(ValueError) as error:
        SynonymTable.load(path, vocab=other)
    assert vocabulary_hash(TOKENS) in str(error.value) and vocabulary_hash(other) in str(error.value)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="path: no such file"):
        SynonymTable.load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a table")
    with pytest.raises(ValueError, match="is not a saved SynonymTable"):
        SynonymTable.load(garbage)
    other = tmp_path / "other.pt"
    torch.save({"offsets": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="is not a saved SynonymTable"):
        SynonymTable.load(other)
    unhashed = tmp_path / "unhashed.pt"
    SynonymTable(small_table().offsets, small_table().ids).save(unhashed)
    with pytest.raises(ValueError, match="records no vocabulary hash"):
        SynonymTable.load(unhashed, vocab=TOKENS)
