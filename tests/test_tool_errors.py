"""Issue 14 item 9: every command-line tool fails with ONE line on stderr and a nonzero exit, never a traceback
(electra-fn-stats on a model without a generator head, electra-pretrain on unwritable or tampered files, tnops
synonyms on tampered tables and non-UTF-8 inputs, MyThes files with NUL bytes, bad TNOPS_CHUNK_ROWS)."""
import builtins
import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from electra import fn_stats, pretrain
from tnops import backends
from tnops import io as tio
from tnops.cli import main as tnops_main
from tnops.synonyms import SynonymTable
from tnops.synonyms.mythes import read_mythes

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "main", "primary", "chief", "principal", "##s", "the", "dog", "dogs", "hound", "."]


def one_line(capfd, prog: str) -> str:
    """The whole of stderr, checked to be exactly one ``PROG: error: ...`` line (fd-level: logging included)."""
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# ---------------------------------------------------------------- electra-fn-stats: a generator head or nothing
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    root = tmp_path_factory.mktemp("models")
    sizes = dict(vocab_size=30522, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                 intermediate_size=32)
    torch.manual_seed(0)
    ElectraForMaskedLM(ElectraConfig(**sizes)).save_pretrained(root / "final" / "generator")
    ElectraForPreTraining(ElectraConfig(**sizes)).save_pretrained(root / "final" / "discriminator")
    shutil.copytree(root / "final" / "discriminator", root / "no_generator" / "discriminator")
    BertForMaskedLM(BertConfig(**{k: v for k, v in sizes.items() if k != "embedding_size"})).save_pretrained(
        root / "bert")
    shutil.copytree(root / "final" / "generator", root / "truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return root


@pytest.mark.parametrize("model, message", [
    ("final/discriminator", r"is not an ElectraForMaskedLM \(generator\) checkpoint: 5 weights missing .*"
                            r"generator_lm_head\.bias.*it is a discriminator.*final/generator"),
    ("no_generator", r"holds no generator \(only discriminator/, which has no MLM head\): expected .*/generator"),
    ("bert", r"is not an ELECTRA checkpoint \(config\.json model_type 'bert', expected 'electra'\)"),
    ("truncated", r"cannot load .*truncated as ElectraForMaskedLM \(SafetensorError: "),
    ("missing", r"no such directory: .*missing"),
], ids=["discriminator", "final-without-generator", "bert", "truncated-safetensors", "missing"])  # fmt: skip
def test_fn_stats_refuses_a_model_without_a_generator_head(models, model, message, capfd):
    assert fn_stats.main(["--model", str(models / model), "--max-batches", "1"]) == 2
    line = one_line(capfd, "electra-fn-stats")
    assert line.startswith("electra-fn-stats: error: --model: ") and re.search(message, line), line


def test_fn_stats_loads_a_whole_generator(models):
    from electra.init_from import load_generator

    generator = load_generator(fn_stats._generator_dir(models / "final"), flag="--model")
    assert type(generator).__name__ == "ElectraForMaskedLM" and generator.config.hidden_size == 16


# ---------------------------------------------------------------- electra-pretrain: folders, disks, checkpoints
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small corpus, its tokenized cache and a checkpoint of step 1 of 2."""
    root = tmp_path_factory.mktemp("pretrain")
    adjectives, colours = ["big", "small", "red", "calm", "loud", "quick"], ["grey", "thin", "fat", "shy"]
    (root / "corpus.txt").write_text("\n\n".join(
        f"The {a} dog sees a {b} cat near the old house. It runs away and hides." for a in adjectives
        for b in colours) + "\n", encoding="utf-8")
    assert pretrain.main(tiny_args(root, root / "run", "--stop-after", "1")) == 0
    return root


def tiny_args(root, out, *extra):
    return ["--preset", "tiny", "--max-seq-length", "32", "--batch-size", "2", "--no-hc", "--corpus",
            str(root / "corpus.txt"), "--cache-dir", str(root / "cache"), "--output-dir", str(out), "--no-progress",
            "--eval-batches", "0", "--max-steps", "2", *extra]


def test_pretrain_output_dir_that_is_a_regular_file(tiny, tmp_path, capfd):
    capfd.readouterr()
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out, where in [(afile, ""), (afile / "run", " cannot be created: " + str(afile))]:
        assert pretrain.main(tiny_args(tiny, out)) == 2
        line = one_line(capfd, "electra-pretrain")
        assert f"--output-dir: {out}{where} is a regular file, not a folder" in line, line


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder where creating files fails as on a read-only mount (chmod alone does not stop root)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    real_open, real_os_open = builtins.open, os.open

    def refused(path) -> bool:
        return Path(os.fspath(path)).resolve().is_relative_to(folder)

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wxa+") and refused(file):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_pretrain_read_only_output_dir_fails_before_training(tiny, read_only, capfd):
    capfd.readouterr()
    assert pretrain.main(tiny_args(tiny, read_only)) == 2
    line = one_line(capfd, "electra-pretrain")
    assert f"--output-dir: cannot write into the folder {read_only}: Permission denied" in line, line
    assert list(read_only.iterdir()) == []


@pytest.fixture
def full_disk(monkeypatch):
    """Files opened for writing under the returned folder take 1 KB, then fail with ENOSPC (a full disk)."""
    folders = []
    real_open = builtins.open

    class FullFile:
        def __init__(self, handle):
            self._handle, self._written = handle, 0

        def write(self, data):
            self._written += len(data)
            if self._written > 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self._handle.write(data)

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    def fake_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        path = Path(os.fspath(file)).resolve() if isinstance(file, (str, os.PathLike)) else None
        if path is not None and set(mode) & set("wxa") and any(path.is_relative_to(f) for f in folders):
            return FullFile(handle)
        return handle

    monkeypatch.setattr(builtins, "open", fake_open)
    return folders


def test_pretrain_full_disk_is_one_line_and_leaves_no_temporary(tiny, tmp_path, full_disk, capfd):
    capfd.readouterr()
    out = tmp_path / "full"
    full_disk.append(out.resolve())
    assert pretrain.main(tiny_args(tiny, out)) == 2
    line = one_line(capfd, "electra-pretrain")
    assert f"cannot write the checkpoint file {out / 'checkpoint.pt'}: No space left on device" in line, line
    assert sorted(p.name for p in out.iterdir()) == []  # the temporary file is gone


def test_atomic_save_restates_torchs_writer_error_as_the_disks(tmp_path, full_disk):
    path = tmp_path / "table.pt"
    tio.atomic_save({"old": 1}, path)
    full_disk.append(tmp_path.resolve())
    with pytest.raises(OSError, match=f"cannot write the SynonymTable file {path}: No space left") as error:
        tio.atomic_save({"w": torch.zeros(10_000)}, path, what="SynonymTable")  # torch: "unexpected pos ..."
    assert error.value.errno == errno.ENOSPC
    assert torch.load(path, weights_only=True) == {"old": 1} and sorted(os.listdir(tmp_path)) == ["table.pt"]


def test_pretrain_export_failure_is_one_line(tiny, tmp_path, monkeypatch, capfd):
    from safetensors import SafetensorError

    from electra.modeling import ElectraTNForPretraining

    def full(self, directory, tokenizer=None):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ElectraTNForPretraining, "save_pretrained", full)
    capfd.readouterr()
    assert pretrain.main(tiny_args(tiny, tmp_path / "run")) == 2
    line = one_line(capfd, "electra-pretrain")
    assert f"--output-dir: cannot export the model to {tmp_path / 'run' / 'final'}: " in line, line
    assert "No space left on device" in line


@pytest.mark.parametrize("tamper, message", [
    (lambda h: [1, 2], r"'history'\[0\] must be a dict, got int 1"),
    (lambda h: {"step": 1}, r"'history' must be a list of records, got dict"),
    (lambda h: [{**h[0], "loss": "x"}], r"'history'\[0\]\['loss'\] must be a number, got str 'x'"),
    (lambda h: [{**h[0], "step": "1"}], r"'history'\[0\]\['step'\] must be an int >= 0, got str '1'"),
    (lambda h: [{**h[0], "masked": -3}], r"'history'\[0\]\['masked'\] must be an int >= 0, got int -3"),
    (lambda h: [{**h[0], "eval": {"loss": [1]}}], r"'history'\[0\]\['eval'\]\['loss'\] must be a number"),
], ids=["ints", "dict", "str-loss", "str-step", "negative-count", "list-eval"])  # fmt: skip
def test_pretrain_resume_refuses_a_tampered_history(tiny, tmp_path, tamper, message, capfd):
    state = torch.load(tiny / "run" / "checkpoint.pt", weights_only=True)
    state["history"] = tamper(state["history"])
    torch.save(state, tmp_path / "tampered.pt")
    capfd.readouterr()
    assert pretrain.main(tiny_args(tiny, tmp_path / "run", "--resume", str(tmp_path / "tampered.pt"))) == 2
    line = one_line(capfd, "electra-pretrain")
    assert f"--resume: {tmp_path / 'tampered.pt'} is not a valid electra-pretrain checkpoint: " in line
    assert re.search(message, line), line


def test_pretrain_resume_never_reads_a_tampered_history_json(tiny, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny / "run", out)
    (out / "history.json").write_text('{"not": "json",', encoding="utf-8")  # invalid JSON, wrong types
    assert pretrain.main(tiny_args(tiny, out, "--resume")) == 0
    history = json.loads((out / "history.json").read_text())  # rewritten from the checkpoint's records
    assert [record["step"] for record in history] == [1, 2]


def test_usage_errors_are_one_line(capfd):
    with pytest.raises(SystemExit) as exit_info:
        pretrain.parse_args(["--max-steps", "0"])
    assert exit_info.value.code == 2
    line = one_line(capfd, "electra-pretrain")
    assert "argument --max-steps: expected an integer >= 1, got 0 (see electra-pretrain --help)" in line
    with pytest.raises(SystemExit):
        tnops_main(["synonyms", "stats"])
    assert "the following arguments are required: file" in one_line(capfd, "tnops synonyms stats")


# ---------------------------------------------------------------- tnops synonyms show/stats: tampered tables
@pytest.fixture
def table_file(tmp_path):
    path = tmp_path / "table.pt"
    SynonymTable.from_rows({3: [4, 5], 9: [11]}, len(VOCAB), tokens=VOCAB,
                           build_record={"source": "test", "vocabulary": {"family": "wordpiece"}}).save(path)
    return path


@pytest.mark.parametrize("field, value, message", [
    ("format_version", "1", "format_version: expected an int, got str '1'"),
    ("format_version", True, "format_version: expected an int, got bool True"),
    ("ids", "sparse", "ids: expected a dense (strided) tensor, got layout torch.sparse_coo"),
    ("offsets", "sparse", "offsets: expected a dense (strided) tensor, got layout torch.sparse_coo"),
    ("build_record", "abc", "build_record: expected a dict, got str 'abc'"),
    ("build_record", {"vocabulary": "x"}, "build_record['vocabulary']: expected a dict, got str 'x'"),
    ("build_record", {"wordnet_coverage": "x"}, "build_record['wordnet_coverage']: expected a dict, got str"),
    ("build_record", {"wordnet_coverage": {"fraction": "x"}}, "build_record['wordnet_coverage']['fraction']: "
                                                             "expected a number, got str"),
    ("build_record", {"options": {"k": torch.zeros(2)}}, "build_record['options']['k']: expected plain values"),
    ("build_record", {"source": 5}, "build_record['source']: expected a str, got int 5"),
    ("build_record", {1: "x"}, "build_record: keys must be str, got int 1"),
    ("tokens", {"main": 3}, "tokens: expected a list of str or None, got dict"),
    ("vocab_hash", 5, "vocab_hash: expected a str or None, got int 5"),
], ids=["version-str", "version-bool", "sparse-ids", "sparse-offsets", "record-str", "vocabulary-str", "coverage-str",
        "fraction-str", "options-tensor", "source-int", "int-key", "tokens-dict", "hash-int"])  # fmt: skip
def test_show_and_stats_refuse_a_tampered_table_naming_the_field(table_file, field, value, message, capfd):
    payload = torch.load(table_file, weights_only=True)
    payload[field] = payload[field].to_sparse() if value == "sparse" else value
    torch.save(payload, table_file)
    for argv in (["show", str(table_file), "main"], ["stats", str(table_file)], ["stats", str(table_file), "--json"]):
        assert tnops_main(["synonyms", *argv]) == 2
        line = one_line(capfd, "tnops")
        assert f"path: {str(table_file)!r} holds an invalid SynonymTable: {message}" in line, line


def test_a_table_that_could_not_be_loaded_back_is_not_saved(tmp_path):
    table = SynonymTable.from_rows({3: [4]}, len(VOCAB), tokens=VOCAB, build_record={"options": {"k": torch.ones(1)}})
    with pytest.raises(ValueError, match=r"build_record\['options'\]\['k'\]: expected plain values"):
        table.save(tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()


# ---------------------------------------------------------------- non-UTF-8 vocabularies and stop-words, MyThes NUL
@pytest.mark.parametrize("name, content, flag, message", [
    ("vocab.txt", "\n".join(VOCAB + ["café"]).encode("latin-1"), "--vocab",
     r"vocab: vocabulary file '.*vocab\.txt' is not UTF-8 text: byte 75 \(line 14, b'\\xe9'\)"),
    ("vocab.txt", "\n".join(VOCAB).encode("utf-16"), "--vocab", r"vocab: vocabulary file .* byte 0 \(line 1"),
    ("tok/tokenizer.json", json.dumps({"model": {"vocab": {t: i for i, t in enumerate(VOCAB + ["naïve"])}}},
                                      ensure_ascii=False).encode("latin-1"), "--vocab",
     r"vocab: tokenizer file '.*tokenizer\.json' is not UTF-8 text: byte \d+ \(line 1, b'\\xef'\)"),
    ("tok/tokenizer.json", b'{"model": {"vocab": {"a": 0,}}}', "--vocab",
     r"vocab: tokenizer file '.*tokenizer\.json' is not valid JSON: .* at line 1 column 29"),
    ("stop.txt", "the\nder\nfür\n".encode("latin-1"), "--stopwords",
     r"stopwords: stop-word file '.*stop\.txt' is not UTF-8 text: byte 9 \(line 3, b'\\xfc'\)"),
], ids=["vocab-latin1", "vocab-utf16", "tokenizer-json-latin1", "tokenizer-json-syntax", "stop-latin1"])  # fmt: skip
def test_non_utf8_vocabulary_and_stopword_files_name_file_and_byte(tmp_path, name, content, flag, message, capfd):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    good_vocab = tmp_path / "good.txt"
    good_vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("main 1 0\nprimary 0.9 0.1\n", encoding="utf-8")
    argv = ["synonyms", "build", "--source", f"embeddings:{vectors}", "--out", str(tmp_path / "o.pt"), "--quiet",
            "--vocab", str(good_vocab if flag == "--stopwords" else path.parent if "/" in name else path)]
    if flag == "--stopwords":
        argv += ["--stopwords", str(path)]
    assert tnops_main(argv) == 2
    line = one_line(capfd, "tnops")
    assert re.search(message, line), line


@pytest.mark.parametrize("content, line", [
    (b"UTF-8\nmain|1\n(adj)|chi\x00ef|primary\n", 3),
    (b"UTF-8\nma\x00in|1\n(adj)|chief\n", 2),
    ("UTF-8\nmain|1\n(adj)|chief\n".encode("utf-16"), 1),
], ids=["term", "headword", "utf16"])  # fmt: skip
def test_mythes_file_with_a_nul_byte_names_file_and_line(tmp_path, content, line, capfd):
    dat = tmp_path / "th_test.dat"
    dat.write_bytes(content)
    with pytest.raises(ValueError, match=f"dat_path: {dat}:{line}: a NUL byte at offset {content.index(0)}"):
        read_mythes(dat)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    assert tnops_main(["synonyms", "build", "--vocab", str(vocab), "--source", f"mythes:{dat}",
                       "--out", str(tmp_path / "o.pt")]) == 2
    assert f"{dat}:{line}: a NUL byte" in one_line(capfd, "tnops")


# ---------------------------------------------------------------- TNOPS_CHUNK_ROWS
@pytest.mark.parametrize("value", ["²", "١", "10" + "0" * 29, "2147483648", "9" * 5000, "0", "-3", "1e3"],
                         ids=["superscript", "arabic-indic", "1e30", "2^31", "5000-digits", "zero", "minus", "float"])
def test_chunk_rows_accepts_only_ascii_digits_in_range(monkeypatch, value):
    monkeypatch.setenv("TNOPS_CHUNK_ROWS", value)
    with pytest.raises(ValueError, match=r"TNOPS_CHUNK_ROWS=.*: expected a positive integer \(ASCII digits\) in "
                                         r"\[1, 2147483647\]"):
        backends.chunk_rows(30522)
    for good in ("1", "0042", "2147483647"):
        monkeypatch.setenv("TNOPS_CHUNK_ROWS", good)
        assert backends.chunk_rows(30522) == int(good)
