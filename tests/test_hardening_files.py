"""Issue 8, files: nothing in a file is run, corrupt files are named, writes are atomic and durable,
binary corpora are refused, and the CLIs turn bad files and paths into one-line errors."""
import os
import subprocess
import sys

import pytest
import torch

from tnops import io as tio
from tnops.cli import main as tnops_main
from tnops.synonyms import SynonymTable

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "main", "primary", "chief", "principal", "##s", "the", "dog", "dogs", "hound", "."]


class RunsCode:
    """Unpickling this calls os.system (what a crafted .pt file can do under weights_only=False)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def small_table():
    return SynonymTable.from_rows({3: [4, 5], 9: [11]}, len(VOCAB), tokens=VOCAB)


# ------------------------------------------------------------------ loading: weights_only, clear errors
def test_load_file_refuses_a_pickle_that_would_run_code(tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"format": "tnops.SynonymTable", "offsets": RunsCode(marker)}, path)
    for load in (lambda: tio.load_file(path), lambda: SynonymTable.load(path)):
        with pytest.raises(ValueError, match="run arbitrary code") as error:
            load()
        assert str(path) in str(error.value) and "system" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_corrupt_files_are_a_value_error_naming_the_path(tmp_path, damage):
    path = tmp_path / "synonyms.pt"
    small_table().save(path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"hello, not a table\n"}[damage])
    with pytest.raises(ValueError, match="is corrupt or is not a saved SynonymTable") as error:
        SynonymTable.load(path)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="is corrupt or is not a tnops checkpoint"):
        tio.load_file(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        tio.load_file(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is a directory"):
        tio.load_file(tmp_path)


@pytest.mark.parametrize("missing", ["ids", "num_candidates"])
def test_table_file_missing_a_key_names_file_and_key(tmp_path, missing):
    path = tmp_path / "table.pt"
    small_table().save(path)
    payload = torch.load(path, weights_only=True)
    del payload[missing]
    torch.save(payload, path)
    with pytest.raises(ValueError, match=f"missing key\\(s\\) '{missing}'") as error:
        SynonymTable.load(path)
    assert str(path) in str(error.value)


def test_table_file_with_invalid_contents_names_the_file(tmp_path):
    path = tmp_path / "table.pt"
    small_table().save(path)
    payload = torch.load(path, weights_only=True)
    payload["ids"] = payload["ids"].long()  # wrong dtype
    torch.save(payload, path)
    with pytest.raises(ValueError, match="holds an invalid SynonymTable: ids: expected dtype torch.int32"):
        SynonymTable.load(path)


# ------------------------------------------------------------------ writing: atomic, durable, no orphans
def test_a_failed_save_leaves_the_old_table_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "synonyms.pt"
    small_table().save(path)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):  # half a file, then the process "dies"
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 half a zip")
        else:  # a path: what SynonymTable.save passed before it wrote atomically
            with open(f, "wb") as handle:
                handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        SynonymTable.from_rows({3: [4]}, len(VOCAB), tokens=VOCAB).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and SynonymTable.load(path).num_pairs == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synonyms.pt"]


def test_saves_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "synonyms.pt"
    small_table().save(path)
    tio.atomic_save({"step": 1}, tmp_path / "checkpoint.pt")
    if os.path.exists("/proc/self/fd"):
        assert str(tmp_path) in synced  # the rename is made durable
        assert sum(".synonyms.pt.tmp-" in p for p in synced) == 1
        assert sum(".checkpoint.pt.tmp-" in p for p in synced) == 1
    else:
        assert len(synced) >= 3


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_orphan_temporaries_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    dead, alive = _dead_pid(), os.getppid()
    orphans = [tmp_path / f".checkpoint.pt.tmp-{dead}", tmp_path / f".checkpoint.pt.tmp-{dead}-0123abcd",
               tmp_path / f".checkpoint.pt.tmp-{os.getpid()}-89abcdef"]
    kept = [tmp_path / f".checkpoint.pt.tmp-{alive}-0123abcd", tmp_path / f".other.pt.tmp-{dead}",
            tmp_path / f".checkpoint.pt.tmp-{dead}-notes.txt"]
    for p in orphans + kept:
        p.write_bytes(b"partial")
    assert sorted(tio.remove_stale_temporaries(path)) == sorted(orphans)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in orphans)
    (tmp_path / f".synonyms.pt.tmp-{dead}").write_bytes(b"partial")
    small_table().save(tmp_path / "synonyms.pt")  # a save cleans its own target's orphans
    assert not (tmp_path / f".synonyms.pt.tmp-{dead}").exists()


def test_trainer_start_removes_orphan_checkpoint_temporaries(tmp_path):
    from electra import pretrain

    out = tmp_path / "run"
    out.mkdir()
    orphan = out / f".checkpoint.pt.tmp-{_dead_pid()}"
    orphan.write_bytes(b"partial")
    with pytest.raises(FileNotFoundError):  # the run stops at --resume, after the clean-up
        pretrain.train(pretrain.parse_args(["--output-dir", str(out), "--no-hc", "--no-progress", "--resume",
                                            "--corpus", str(tmp_path / "no-corpus.txt")]))
    assert not orphan.exists()


def test_save_to_a_directory_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        small_table().save(tmp_path)


# ------------------------------------------------------------------ CLIs
def test_synonyms_build_out_directory_is_a_cli_error(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    vectors = tmp_path / "glove.txt"
    vectors.write_text("main 1 0\nprimary 0.9 0.1\n", encoding="utf-8")
    out = tmp_path / "tables"
    out.mkdir()
    code = tnops_main(["synonyms", "build", "--vocab", str(vocab), "--source", f"embeddings:{vectors}", "--out",
                       str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tnops: error: --out: ") and "is a directory" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_fn_stats_checks_its_numbers(capsys):
    from electra import fn_stats

    for flag, value in [("--batch-size", "0"), ("--max-seq-length", "2"), ("--max-batches", "0"), ("--seed", "-3")]:
        with pytest.raises(SystemExit) as exit_info:
            fn_stats.main(["--model", "m", f"{flag}={value}"])
        assert exit_info.value.code == 2 and f"argument {flag}: expected " in capsys.readouterr().err


# ------------------------------------------------------------------ corpora: strict UTF-8
@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 4, "is not UTF-8 text"),
    ("Ein Bär läuft über die Straße.\n".encode("latin-1"), "is not UTF-8 text"),
    ("A sentence in UTF-16.\n".encode("utf-16-le"), "holds a NUL byte"),
], ids=["binary", "latin-1", "utf-16"])  # fmt: skip
def test_a_corpus_file_that_is_not_utf8_text_is_refused_by_name(tmp_path, content, message):
    from electra.corpus import load_documents

    bad = tmp_path / "corpus" / "part-2"
    bad.parent.mkdir()
    (tmp_path / "corpus" / "part-1.txt").write_text("Plain text. Another sentence.\n", encoding="utf-8")
    bad.write_bytes(content)
    for corpus in (bad, bad.parent):  # alone, and inside a directory: refused either way (never decoded to garbage)
        with pytest.raises(ValueError, match=message) as error:
            load_documents(corpus)
        assert str(bad) in str(error.value) and str(error.value).startswith("corpus: ")
    assert load_documents(bad.parent, pattern="*.txt") == ["Plain text. Another sentence."]  # excluded by pattern


def test_read_utf8_text_accepts_utf8(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text("naïve café — ünïcödé ✓\n", encoding="utf-8")
    assert tio.read_utf8_text(path) == "naïve café — ünïcödé ✓\n"
