"""The `tnops` command line: synonyms build / show / stats, and its error handling."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tnops.cli import main
from tnops.synonyms import SynonymTable
from tnops.synonyms import wordnet as wordnet_module

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "main", "primary", "chief", "principal", "##s", "the", "dog", "dogs", "hound", "."]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def vectors_file(tmp_path):
    path = tmp_path / "glove.txt"
    rows = {"main": "1 0 0", "primary": "0.9 0.1 0", "chief": "0.8 0.3 0", "dog": "0 1 0", "hound": "0 0.9 0.2"}
    path.write_text("".join(f"{word} {vector}\n" for word, vector in rows.items()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def wordnet_data(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TNOPS_NLTK_DATA", str(tmp_path_factory.mktemp("nltk_data")))
        try:
            wordnet_module.find_wordnet_root()
        except LookupError as error:
            pytest.skip(f"WordNet is not installed: {error}")
        yield


def test_build_show_stats_with_embeddings(tmp_path, vocab_file, vectors_file, capsys):
    out = tmp_path / "table.pt"
    assert main(["synonyms", "build", "--vocab", str(vocab_file), "--source", f"embeddings:{vectors_file}",
                 "--k", "1", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet
    table = SynonymTable.load(out, vocab=vocab_file)
    assert table.build_record["options"]["k"] == 1
    assert main(["synonyms", "show", str(out), "main"]) == 0
    assert capsys.readouterr().out == "main: primary\n"
    assert main(["synonyms", "show", str(out), "principal"]) == 0  # a word without vector or synonyms
    assert capsys.readouterr().out == "principal: (no synonyms)\n"
    assert main(["synonyms", "stats", str(out), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "tokens      : 13" in text and "pairs       : 5" in text and "top 2 entries" in text
    assert main(["synonyms", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tokens"] == 13 and stats["keys"] == 5 and stats["pairs"] == 5 and stats["candidate_keys"] == 7
    assert stats["coverage"] == pytest.approx(5 / 7) and stats["top_entries"][0]["synonyms"] == 1


def test_build_with_wordnet(tmp_path, vocab_file, wordnet_data, capsys):
    out = tmp_path / "wordnet.pt"
    assert main(["synonyms", "build", "--vocab", str(vocab_file), "--source", "wordnet", "--out", str(out)]) == 0
    assert "SynonymTable(vocab_size=13" in capsys.readouterr().out
    assert main(["synonyms", "show", str(out), "Main"]) == 0
    assert capsys.readouterr().out == "Main: primary, chief, principal\n"
    assert main(["synonyms", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "source      : wordnet 3.0" in text and "have a WordNet entry" in text
    assert ["main", "3", "primary,", "chief,", "principal"] in [line.split() for line in text.splitlines()]


def test_build_with_mythes_and_options(tmp_path, vocab_file, capsys):
    dat = tmp_path / "th_test.dat"
    dat.write_text("UTF-8\nmain|2\n(adj)|chief|primary|important (similar term)\n(noun)|dog (antonym)\n"
                   "the|1\n-|main\n", encoding="utf-8")
    out = tmp_path / "mythes.pt"
    argv = ["synonyms", "build", "--vocab", str(vocab_file), "--source", f"mythes:{dat}", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert SynonymTable.load(out).synonyms_of_word("main") == ["primary", "chief"]
    assert main(argv + ["--keep-annotation", "antonym", "--no-stopwords", "--symmetric"]) == 0
    table = SynonymTable.load(out)
    assert table.synonyms_of_word("main") == ["primary", "chief", "the", "dog"]  # "the" by reversal
    assert table.synonyms_of_word("the") == ["main"]  # a key once stop-words are off
    assert table.synonyms_of_word("dog") == ["main"]  # reverse pair from --symmetric


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: COMMAND"),
    (["synonyms"], "the following arguments are required: ACTION"),
    (["synonyms", "build", "--out", "x.pt"], "the following arguments are required: --source"),
    (["synonyms", "build", "--source", "thesaurus", "--out", "x.pt"],
     "expected wordnet, mythes:PATH or embeddings:PATH"),
    (["synonyms", "build", "--source", "mythes:", "--out", "x.pt"], "expected wordnet, mythes:PATH or embeddings:PATH"),
    (["synonyms", "build", "--source", "wordnet", "--out", "x.pt", "--k", "0"], "expected an integer >= 1, got 0"),
    (["synonyms", "build", "--source", "wordnet", "--out", "x.pt", "--k", "ten"],
     "expected an integer >= 1, got 'ten'"),
    (["synonyms", "build", "--source", "wordnet", "--out", "x.pt", "--threshold", "1.5"], "a cosine threshold lies in"),
    (["synonyms", "build", "--source", "wordnet", "--out", "x.pt", "--no-stopwords", "--stopwords", "f"],
     "not allowed with argument"),
    (["synonyms", "stats"], "the following arguments are required: file"),
])  # fmt: skip
def test_argument_errors_exit_2_with_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_input_errors_exit_2_with_one_line(tmp_path, vocab_file, capsys):
    out = str(tmp_path / "x.pt")
    cases = [
        (["synonyms", "build", "--vocab", str(tmp_path / "missing.txt"), "--source", "wordnet", "--out", out],
         "vocab: no such file"),
        (["synonyms", "build", "--vocab", str(vocab_file), "--source", f"mythes:{tmp_path / 'th_none.dat'}",
          "--out", out],
         "dat_path: no such MyThes file"),
        (["synonyms", "build", "--vocab", str(vocab_file), "--source", f"embeddings:{tmp_path / 'none.txt'}",
          "--out", out],
         "vectors: no such file"),
        (["synonyms", "show", str(tmp_path / "none.pt"), "main"], "path: no such file"),
        (["synonyms", "stats", str(vocab_file)], "is not a saved SynonymTable"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("tnops: error: ") and message in err and "Traceback" not in err, err
    table = SynonymTable.from_rows({3: [4]}, len(VOCAB), tokens=VOCAB)
    table.save(out)
    assert main(["synonyms", "show", out, "##s"]) == 2
    assert "word: '##s' is not a whole-word token" in capsys.readouterr().err


def test_module_entry_point_runs_as_a_process(tmp_path, vocab_file, vectors_file):
    out = tmp_path / "table.pt"
    build = subprocess.run([sys.executable, "-m", "tnops.cli", "synonyms", "build", "--vocab", str(vocab_file),
                            "--source", f"embeddings:{vectors_file}", "--k", "2", "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert "written to" in build.stdout and Path(out).is_file()
    show = subprocess.run([sys.executable, "-m", "tnops.cli", "synonyms", "show", str(out), "##s"],
                          capture_output=True, text=True, timeout=300)
    assert show.returncode == 2 and show.stdout == ""
    assert show.stderr == "tnops: error: word: '##s' is not a whole-word token of this vocabulary\n"


def test_save_creates_missing_folders(tmp_path):
    from tnops import SynonymTable

    path = tmp_path / "a" / "b" / "table.pt"
    SynonymTable.from_pairs([1], [2], 5).save(path)
    assert SynonymTable.load(path).num_pairs == 1
