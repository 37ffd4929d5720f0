"""ELECTRA data: documents, default corpus, tokenizer, ELECTRA packing, cache, batch order."""
import os
import sys
from collections import Counter

import pytest
import torch

from electra import corpus as corpus_module
from electra import data
from electra.corpus import clean_rest, load_documents, split_sentences
from electra.data import BatchStream, PretrainingSplit, build_dataset, eval_batches, load_tokenizer, pack_examples

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


# ------------------------------------------------------------------------------------- documents
def test_file_documents_are_blank_line_blocks(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First doc line one.\nline two.\n\n  \t\nSecond doc.\n\n\n\nThird doc.\n")
    assert load_documents(path) == ["First doc line one.\nline two.", "Second doc.", "Third doc."]
    assert load_documents(str(path)) == load_documents(path)


def test_directory_documents_recursive_sorted_and_pattern(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("from b\n\nsecond of b")
    (tmp_path / "sub" / "a").write_text("from sub/a")  # extension-less files count
    (tmp_path / "c.md").write_text("from c")
    (tmp_path / ".hidden.txt").write_text("hidden")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert load_documents(tmp_path) == ["from b", "second of b", "from sub/a"]
    assert load_documents(tmp_path, pattern="*.md") == ["from c"]


def test_document_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_file.txt"):
        load_documents(tmp_path / "no_such_file.txt")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_documents("no_such_dir/corpus")
    (tmp_path / "blank.txt").write_text("\n \n\n")
    with pytest.raises(ValueError, match="empty corpus"):
        load_documents(tmp_path / "blank.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="pattern"):
        load_documents(tmp_path / "d", pattern="*.rst")
    with pytest.raises(TypeError, match="corpus"):
        load_documents(42)
    with pytest.raises(TypeError, match="pattern"):
        load_documents(tmp_path, pattern=3)
    with pytest.raises(ValueError, match="empty corpus"):
        load_documents(["", "   "])
    with pytest.raises(ValueError, match="unknown built-in"):
        load_documents("builtin:shakespeare")


def test_datasets_name_needs_the_datasets_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError, installed or not
    with pytest.raises(ImportError, match="pip install datasets"):
        load_documents("wikitext:wikitext-2-raw-v1:train")
    with pytest.raises(ImportError, match="pip install datasets"):
        load_documents("hf:Salesforce/wikitext")


# -------------------------------------------------------------------------------- default corpus
def test_default_corpus_is_real_english():
    source = corpus_module.resolve_corpus(None)
    documents = load_documents()
    text = "\n".join(documents)
    assert len(text) > 2_000_000, source.description
    counts = Counter(text.lower().split())
    for word in ("the", "of", "and", "is", "to", "a", "in"):
        assert counts[word] > 5_000, word
    assert counts.most_common(1)[0][0] == "the"
    if source.identity["builtin"] == "python-docs":  # the markup is gone
        for markup in (":func:`", ":class:`", ":ref:`", "\n.. ", "::\n", "\n>>>"):
            assert markup not in text, markup
        assert text.count("``") < 20  # a few literals broken across list-item lines survive
        sentences = split_sentences(documents[len(documents) // 2])
        assert len(sentences) > 10 and all(s[-1] in ".!?:;)\"'" for s in sentences[:-1])


def test_clean_rest_keeps_prose_only():
    source = """\
.. _label:

*************
A Title Here
*************

Some :func:`~os.path.join` prose with ``literal`` text, *emphasis* and a
`link <https://example.org>`_ that wraps across lines.  See :pep:`8` too.

.. function:: spam(eggs, ham=None)
   :noindex:

   Return the spam made of *eggs*, as described in :ref:`the guide <guide>`.

   .. versionchanged:: 3.2
      Added the ham parameter to the function.

For example, the following code runs::

   >>> spam(1)
   2

>>> spam(2)
3

.. code-block:: python

   print("this is code, not prose at all")

+-------+-------+
| a table cell  |
+-------+-------+

* A bullet item with enough words to count as prose.
* Another bullet item that also has plenty of words.

.. This comment is long enough to be prose but it is a comment.
"""
    assert clean_rest(source) == [
        "Some join() prose with literal text, emphasis and a link that wraps across lines. See PEP 8 too.",
        "Return the spam made of eggs, as described in the guide.",
        "Added the ham parameter to the function.",
        "For example, the following code runs:",
        "A bullet item with enough words to count as prose.",
        "Another bullet item that also has plenty of words.",
    ]


def test_split_sentences():
    text = ("Hello there, e.g. Alice said so. Mr. Smith met J. Doe in 2020! Was it late?\n"
            "Lead-in:\nwrapped line\ncontinues here. \"Quoted.\" 3 apples.")
    assert split_sentences(text) == [
        "Hello there, e.g. Alice said so.", "Mr. Smith met J. Doe in 2020!", "Was it late?", "Lead-in:",
        "wrapped line continues here.", "\"Quoted.\"", "3 apples."]


_GLOSS_LINES = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "00001740 00 a 01 able 0 005 = 05200169 n 0000 | (usually followed by `to') having the necessary "
    "means or skill; \"able to swim\"; \"she was able to program her computer\"  \n"
    "00002098 00 a 01 unable 0 002 = 05200169 n 0000 | not having the necessary means or skill  \n")


def test_wordnet_fallback_and_missing_default(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_module, "PYTHON_DOCS_GLOBS", (str(tmp_path / "none"),))
    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(_GLOSS_LINES if pos == "adj" else "")
    monkeypatch.setattr(corpus_module, "WORDNET_DIR", str(tmp_path))
    assert load_documents() == [
        "able: (usually followed by `to') having the necessary means or skill. able to swim. "
        "she was able to program her computer.\nunable: not having the necessary means or skill."]
    monkeypatch.setattr(corpus_module, "WORDNET_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="python3-doc.*wordnet-base"):
        load_documents()
    with pytest.raises(FileNotFoundError, match="apt-get install python3-doc"):
        load_documents("builtin:python-docs")


# ------------------------------------------------------------------------------------- tokenizer
def test_default_tokenizer_is_bert_base_uncased_offline(monkeypatch, tokenizer):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_tokenizer()
    assert len(offline) == 30522 == len(tokenizer)
    assert (offline.cls_token_id, offline.sep_token_id, offline.pad_token_id, offline.mask_token_id) == \
        (CLS, SEP, PAD, 103)
    assert offline.tokenize("Hello World") == ["hello", "world"]  # uncased
    assert load_tokenizer(tokenizer) is tokenizer
    assert data.tokenizer_fingerprint(offline) == data.tokenizer_fingerprint(tokenizer)
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

    monkeypatch.setattr(data, "_tokenize", no_tokenizing)
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


# --------------------------------------------------------------------------------------- batches
def _numbered_split(num_examples=50, length=8):
    """Row i holds i in every position, so a batch's rows are readable."""
    ids = torch.arange(num_examples, dtype=torch.int32)[:, None].expand(num_examples, length).contiguous()
    return PretrainingSplit(ids, torch.ones_like(ids, dtype=torch.int8), torch.zeros_like(ids, dtype=torch.int8))


def _rows(stream, steps):
    return [next(stream).input_ids[:, 0].tolist() for _ in range(steps)]


def test_batch_stream_order_epochs_and_seed():
    split = _numbered_split()
    stream = BatchStream(split, 8, seed=0)
    assert stream.steps_per_epoch == 6
    epoch0 = _rows(stream, 6)
    flat = [i for batch in epoch0 for i in batch]
    assert len(set(flat)) == 48 and all(0 <= i < 50 for i in flat)  # a permutation, tail of 2 dropped
    assert stream.state_dict()["epoch"] == 1 and stream.global_step == 6
    epoch1 = _rows(stream, 6)
    assert epoch1 != epoch0
    assert _rows(BatchStream(split, 8, seed=0), 12) == epoch0 + epoch1
    assert _rows(BatchStream(split, 8, seed=1), 6) != epoch0
    batch = next(BatchStream(split, 8, seed=0))
    assert batch.input_ids.dtype == torch.int64 and batch.input_ids.shape == (8, 8)
    assert torch.equal(batch.input_ids[:, 0], batch.indices) and (batch.epoch, batch.step) == (0, 0)


def test_batch_stream_resume_is_identical():
    split = _numbered_split()
    reference = _rows(BatchStream(split, 8, seed=4), 20)
    stream = BatchStream(split, 8, seed=4)
    _rows(stream, 9)
    state = stream.state_dict()
    resumed = BatchStream(split, 8, seed=4)
    resumed.load_state_dict(state)
    assert _rows(resumed, 11) == reference[9:]
    with pytest.raises(ValueError, match="seed"):
        BatchStream(split, 8, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="global_batch_size"):
        BatchStream(split, 4, seed=4).load_state_dict(state)


def test_batch_stream_ranks_partition_the_global_batch():
    split = _numbered_split()
    single = BatchStream(split, 8, seed=2)
    ranks = [BatchStream(split, 8, seed=2, rank=r, world_size=2) for r in range(2)]
    for _ in range(8):
        whole = next(single)
        parts = [next(r) for r in ranks]
        assert [p.global_offset for p in parts] == [0, 4]
        assert torch.equal(torch.cat([p.input_ids for p in parts]), whole.input_ids)
    # State is rank-independent: a world_size=4 run resumes a world_size=1 run.
    resumed = BatchStream(split, 8, seed=2, rank=3, world_size=4)
    resumed.load_state_dict(single.state_dict())
    assert next(resumed).input_ids[:, 0].tolist() == next(single).input_ids[6:, 0].tolist()


def test_batch_stream_errors():
    split = _numbered_split()
    with pytest.raises(ValueError, match="global_batch_size=6.*world_size=4"):
        BatchStream(split, 6, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        BatchStream(split, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="global_batch_size=64"):
        BatchStream(split, 64)
    with pytest.raises(ValueError, match="global_batch_size"):
        BatchStream(split, 0)
    with pytest.raises(TypeError, match="seed"):
        BatchStream(split, 8, seed=1.5)


def test_eval_batches_cover_the_split_in_order():
    split = _numbered_split(num_examples=10)
    batches = list(eval_batches(split, 4))
    assert [b.input_ids[:, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.global_offset for b in batches] == [0, 4, 8]
    with pytest.raises(ValueError, match="batch_size"):
        eval_batches(split, 0)


def test_batch_to_device_keeps_fields():
    batch = next(BatchStream(_numbered_split(), 8, seed=0)).to("cpu")
    assert batch.input_ids.shape == (8, 8) and batch.global_offset == 0


@pytest.mark.skipif(not os.environ.get("TNOPS_TEST_DEFAULT_DATASET"), reason="set TNOPS_TEST_DEFAULT_DATASET=1 "
                    "to build the whole default corpus (~15 s)")
def test_default_dataset_builds(tmp_path):
    built = build_dataset(cache_dir=tmp_path, progress=False)
    assert len(built.train) > 5_000 and built.train.num_tokens > 0.8 * len(built.train) * 128
