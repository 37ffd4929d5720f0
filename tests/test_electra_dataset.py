"""ELECTRA data: the offline tokenizer, ELECTRA packing, the dataset build and its on-disk cache."""
import os

import pytest
import torch

from electra import dataset as dataset_module
from electra.dataset import build_dataset
from electra.packing import pack_examples
from electra.tokenizer import load_tokenizer, tokenizer_fingerprint

CLS, SEP, PAD = 101, 102, 0
PROSE = [
    "The quick brown fox jumps over the lazy dog. It was not amused by the fox at all.\n"
    "The dog went back to sleep. Nobody knows what happened to the fox afterwards.",
    "Python is a programming language that lets you work quickly. It integrates systems effectively.\n"
    "Many people use it for science, for the web and for teaching. Its documentation is long.",
    "A third document talks about the weather. The weather was cold and windy in the north.\n"
    "Rain fell for three days. Then the sun came out again and everyone was happy.",
    "The fourth document is about cooking. Bread needs flour, water, salt and yeast. "
    "Knead the dough and let it rise. Bake it in a hot oven until it is golden brown.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


# ------------------------------------------------------------------------------------- tokenizer
def test_default_tokenizer_is_bert_base_uncased_offline(monkeypatch, tokenizer):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_tokenizer()
    assert len(offline) == 30522 == len(tokenizer)
    assert (offline.cls_token_id, offline.sep_token_id, offline.pad_token_id, offline.mask_token_id) == \
        (CLS, SEP, PAD, 103)
    assert offline.tokenize("Hello World") == ["hello", "world"]  # uncased
    assert load_tokenizer(tokenizer) is tokenizer
    assert tokenizer_fingerprint(offline) == tokenizer_fingerprint(tokenizer)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_tokenizer("/no/such/tokenizer_dir")
    with pytest.raises(TypeError, match="tokenizer"):
        load_tokenizer(3.5)


# --------------------------------------------------------------------------------------- packing
def _synthetic_documents(num_documents=30, seed=0):
    """Token id = 10_000 + doc*1000... encodes (document, sentence, position) so rows can be traced."""
    generator = torch.Generator().manual_seed(seed)
    documents = []
    for d in range(num_documents):
        num_sentences = int(torch.randint(1, 25, (1,), generator=generator))
        lengths = torch.randint(1, 30, (num_sentences,), generator=generator).tolist()
        documents.append([[1_000_000 + d * 10_000 + s * 100 + p for p in range(n)]
                          for s, n in enumerate(lengths)])
    return documents


def _check_rows(split, documents, max_seq_length):
    sentence_starts = {sentence[0] for doc in documents for sentence in doc}
    last_sentence = {}  # document -> highest sentence index used so far
    shapes = {"single": 0, "pair": 0, "short": 0}
    for row in range(len(split)):
        ids, mask, types = (split.input_ids[row].tolist(), split.attention_mask[row].tolist(),
                            split.token_type_ids[row].tolist())
        length = sum(mask)
        assert 3 <= length <= max_seq_length and mask == [1] * length + [0] * (max_seq_length - length)
        assert ids[0] == CLS and ids[length - 1] == SEP and ids[length:] == [PAD] * (max_seq_length - length)
        seps = [i for i in range(length) if ids[i] == SEP]
        assert len(seps) in (1, 2)
        expected_types = [0] * (seps[0] + 1) + [1] * (length - seps[0] - 1) + [0] * (max_seq_length - length)
        assert types == expected_types
        segments = [ids[1:seps[0]]] + ([ids[seps[0] + 1:seps[1]]] if len(seps) == 2 else [])
        shapes["pair" if len(seps) == 2 else "single"] += 1
        shapes["short"] += length < max_seq_length // 2
        # Each segment is whole sentences of one document, in order, starting at a sentence boundary
        # (ELECTRA lets a short sentence join A after a longer one went to B, so A and B may interleave).
        tokens = [t for segment in segments for t in segment]
        assert all(segment and segment[0] in sentence_starts for segment in segments)
        assert all(a < b for segment in segments for a, b in zip(segment, segment[1:]))
        assert len(set(tokens)) == len(tokens)
        document = {(t - 1_000_000) // 10_000 for t in tokens}
        assert len(document) == 1
        document = document.pop()
        sentences = {(t // 100) % 100 for t in tokens}
        assert min(sentences) > last_sentence.get(document, -1)  # examples never reuse a sentence
        last_sentence[document] = max(sentences)
    return shapes


def test_pack_examples_structure():
    documents = _synthetic_documents(num_documents=200)
    split = pack_examples(documents, 64, cls_id=CLS, sep_id=SEP, pad_id=PAD, seed=0)
    assert split.input_ids.dtype == torch.int32 and split.input_ids.shape[1] == 64
    shapes = _check_rows(split, documents, 64)
    assert shapes["single"] > 0 and shapes["pair"] > shapes["single"] and shapes["short"] > 0
    batch = split[torch.tensor([0, 2])]
    assert all(t.dtype == torch.int64 and t.shape == (2, 64) for t in batch.values())


def test_pack_examples_deterministic_under_seed():
    documents = _synthetic_documents()
    first = pack_examples(documents, 48, cls_id=CLS, sep_id=SEP, pad_id=PAD, seed=5)
    again = pack_examples(documents, 48, cls_id=CLS, sep_id=SEP, pad_id=PAD, seed=5)
    other = pack_examples(documents, 48, cls_id=CLS, sep_id=SEP, pad_id=PAD, seed=6)
    assert torch.equal(first.input_ids, again.input_ids) and torch.equal(first.token_type_ids, again.token_type_ids)
    assert first.input_ids.shape != other.input_ids.shape or not torch.equal(first.token_type_ids,
                                                                             other.token_type_ids)


def test_pack_examples_truncates_long_sentences():
    long_document = [[[1_000_000 + p for p in range(500)], [1_000_100 + p for p in range(5)]]]
    split = pack_examples(long_document, 16, cls_id=CLS, sep_id=SEP, pad_id=PAD, seed=0)
    # The 500-token sentence fills an example alone and loses its tail; the next sentence starts afresh.
    assert split.input_ids.tolist() == [[CLS] + list(range(1_000_000, 1_000_014)) + [SEP],
                                        [CLS] + list(range(1_000_100, 1_000_105)) + [SEP] + [PAD] * 9]
    assert split.attention_mask.sum(1).tolist() == [16, 7]


# ---------------------------------------------------------------------------------- build + cache
def test_build_dataset_and_cache_hit(tmp_path, monkeypatch, tokenizer):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(PROSE * 3))
    built = build_dataset(corpus, tokenizer, max_seq_length=24, cache_dir=tmp_path / "cache", seed=1,
                          eval_fraction=0.1, progress=False)
    assert len(built.eval) >= 1 and len(built.train) >= 1 and built.max_seq_length == 24
    assert built.vocab_size == 30522 and built.special_ids["mask"] == 103
    row = built.train[0]
    assert row["input_ids"].dtype == torch.int64 and row["input_ids"][0] == CLS
    words = set(" ".join(PROSE).lower().replace(".", " ").replace(",", " ").split())
    decoded = tokenizer.decode(torch.cat([built.train.input_ids, built.eval.input_ids]).flatten().tolist(),
                               skip_special_tokens=True)
    assert len(set(decoded.replace(".", " ").replace(",", " ").split()) & words) > 40
    assert (built.cache_path / "meta.json").is_file() and built.cache_path.parent == tmp_path / "cache"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no staging left

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("a cache hit must not tokenize")

    monkeypatch.setattr(dataset_module, "tokenize", no_tokenizing)
    cached = build_dataset(corpus, tokenizer, max_seq_length=24, cache_dir=tmp_path / "cache", seed=1,
                           eval_fraction=0.1, progress=False)
    assert cached.cache_path == built.cache_path
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(getattr(cached.train, name), getattr(built.train, name))
        assert torch.equal(getattr(cached.eval, name), getattr(built.eval, name))
    # Another seed, or a changed corpus file, is another cache entry and is built afresh.
    with pytest.raises(AssertionError, match="cache hit"):
        build_dataset(corpus, tokenizer, max_seq_length=24, cache_dir=tmp_path / "cache", seed=2,
                      eval_fraction=0.1, progress=False)
    corpus.write_text("\n\n".join(PROSE * 4))
    with pytest.raises(AssertionError, match="cache hit"):
        build_dataset(corpus, tokenizer, max_seq_length=24, cache_dir=tmp_path / "cache", seed=1,
                      eval_fraction=0.1, progress=False)


def test_build_dataset_deterministic_and_eval_split(tmp_path, tokenizer):
    kwargs = dict(tokenizer=tokenizer, max_seq_length=16, cache_dir=False, progress=False)
    first = build_dataset(PROSE, seed=3, eval_fraction=0.2, **kwargs)
    again = build_dataset(PROSE, seed=3, eval_fraction=0.2, **kwargs)
    assert first.cache_path is None
    assert torch.equal(first.train.input_ids, again.train.input_ids)
    assert torch.equal(first.eval.input_ids, again.eval.input_ids)
    total = len(first.train) + len(first.eval)
    assert len(first.eval) == round(0.2 * total)
    none_held_out = build_dataset(PROSE, seed=3, eval_fraction=0.0, **{**kwargs, "cache_dir": tmp_path})
    assert len(none_held_out.eval) == 0 and len(none_held_out.train) == total
    reloaded = build_dataset(PROSE, seed=3, eval_fraction=0.0, **{**kwargs, "cache_dir": tmp_path})
    assert len(reloaded.eval) == 0 and torch.equal(reloaded.train.input_ids, none_held_out.train.input_ids)
    tiny = build_dataset(["One short sentence here.", "Another one."], seed=0, eval_fraction=0.01, **kwargs)
    assert (len(tiny.train), len(tiny.eval)) == (1, 1)  # at least one held out, at least one kept


def test_build_dataset_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="max_seq_length"):
        build_dataset(PROSE, tokenizer, max_seq_length=7, cache_dir=False)
    with pytest.raises(TypeError, match="max_seq_length"):
        build_dataset(PROSE, tokenizer, max_seq_length="128", cache_dir=False)
    with pytest.raises(ValueError, match="eval_fraction"):
        build_dataset(PROSE, tokenizer, eval_fraction=1.0, cache_dir=False)
    with pytest.raises(ValueError, match="seed"):
        build_dataset(PROSE, tokenizer, seed=-1, cache_dir=False)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        build_dataset(tmp_path / "missing.txt", tokenizer, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="empty corpus"):
        build_dataset(["\u200b"], tokenizer, cache_dir=False, progress=False)  # no tokens at all


@pytest.mark.skipif(not os.environ.get("TNOPS_TEST_DEFAULT_DATASET"), reason="set TNOPS_TEST_DEFAULT_DATASET=1 "
                    "to build the whole default corpus (~15 s)")
def test_default_dataset_builds(tmp_path):
    built = build_dataset(cache_dir=tmp_path, progress=False)
    assert len(built.train) > 5_000 and built.train.num_tokens > 0.8 * len(built.train) * 128
