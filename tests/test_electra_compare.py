"""electra-compare: variants trained from one seed, resumable runs, evaluation and fine-tuning per run, the
mean ± spread table, the curves and the one-line errors."""
import json
import random

import pytest

import tnops
from electra import compare, compare_report
from electra.compare_report import aggregate, format_cell, markdown_table, summarize

WORDS = ("the happy child saw a big house near the large river while a glad mother smiled at the small cat and "
         "the little dog ran quickly past the old tree").split()
GLOVE = "happy 1 0 0.1\nglad 0.9 0.1 0.1\nbig 0 1 0\nlarge 0.1 0.95 0\nsmall 0 0 1\nlittle 0.05 0 0.9\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small corpus, GloVe-format vectors of six words, the table of their nearest neighbours (k=1) and a CoLA
    folder in GLUE's layout."""
    from electra.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("compare")
    rng = random.Random(0)
    (root / "corpus.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) + "."
                                                 for _ in range(60)))
    (root / "glove.txt").write_text(GLOVE)
    tnops.SynonymTable.from_embeddings(root / "glove.txt", load_tokenizer(), k=1).save(root / "synonyms.pt")
    cola = root / "cola"
    cola.mkdir()
    rows = [f"src\t{i % 2}\t\tthe {'happy' if i % 2 else 'old'} child saw house {i}." for i in range(8)]
    (cola / "train.tsv").write_text("\n".join(rows) + "\n")
    (cola / "dev.tsv").write_text("\n".join(rows[:4]) + "\n")
    return root


def common_flags(files, out):
    return ["--preset", "tiny", "--max-steps", "2", "--max-seq-length", "16", "--batch-size", "4",
            "--eval-batches", "1", "--corpus", str(files / "corpus.txt"), "--cache-dir", str(files / "cache"),
            "--synonyms", str(files / "synonyms.pt"), "--no-progress", "--output-dir", str(out)]


# ------------------------------------------------------------------------------------------ end to end
def test_two_variants_end_to_end_then_reused_and_finetuned(files, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["--variants", "baseline,sr", "--seeds", "0", *common_flags(files, out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert list(report["variants"]) == ["baseline", "sr"]
    histories = {}
    for variant in ("baseline", "sr"):
        run = out / variant / "seed0"
        evaluation = json.loads((run / "eval.json").read_text())
        metrics = report["variants"][variant]["metrics"]
        assert metrics["mlm_accuracy"]["mean"] == evaluation["mlm_accuracy"]  # one seed: the mean is the value
        assert metrics["mlm_accuracy"]["n"] == 1 and metrics["mlm_accuracy"]["std"] is None
        assert 0.0 <= evaluation["rtd_accuracy"] <= 1.0
        histories[variant] = json.loads((run / "history.json").read_text())
        assert json.loads((run / "run.json").read_text())["settings"]["seed"] == 0
    # the variant's flags reached electra-pretrain: SR on in sr only, hard correction in neither
    assert all(r["sr_loss"] == 0.0 for r in histories["baseline"])
    assert all(r["sr_loss"] > 0.0 for r in histories["sr"])
    # same seed: same initialisation, batches and masks, so step 1 (before any update) is the same in both
    first = [histories[v][0] for v in ("baseline", "sr")]
    for key in ("gen_loss", "disc_loss", "masked"):
        assert first[0][key] == first[1][key], key
    table = (out / "compare.md").read_text()
    assert "| baseline | 1 |" in table and "| sr | 1 |" in table and "±" not in table
    assert (out / "compare.png").stat().st_size > 10_000

    # a second invocation (now also fine-tuning) trains and evaluates nothing again
    checkpoints = {v: (out / v / "seed0" / "checkpoint.pt").stat().st_mtime_ns for v in ("baseline", "sr")}
    evaluations = {v: (out / v / "seed0" / "eval.json").stat().st_mtime_ns for v in ("baseline", "sr")}
    capsys.readouterr()
    assert compare.main(["--variants", "baseline,sr", "--seeds", "0", "--finetune", "cola", "--data-dir",
                         str(files / "cola"), "--finetune-steps", "1", "--finetune-batch-size", "4",
                         *common_flags(files, out)]) == 0
    assert capsys.readouterr().out.count("not retrained") == 2
    for variant in ("baseline", "sr"):
        assert (out / variant / "seed0" / "checkpoint.pt").stat().st_mtime_ns == checkpoints[variant]
        assert (out / variant / "seed0" / "eval.json").stat().st_mtime_ns == evaluations[variant]
        results = json.loads((out / variant / "seed0" / "finetune" / "cola" / "results.json").read_text())
        seeds = json.loads((out / "compare.json").read_text())["variants"][variant]["seeds"]
        assert seeds["0"]["cola_matthews"] == results["matthews"]
    assert "cola matthews" in (out / "compare.md").read_text()


# ------------------------------------------------------------------------------------------ resumability
def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_run_status_finished_resume_fresh(tmp_path):
    run, settings = tmp_path / "run", {"preset": "tiny", "max_steps": 4, "seed": 1}
    assert compare.run_status(run, settings, 4)[0] == "fresh"
    _write(run / "run.json", {"settings": settings})
    assert compare.run_status(run, settings, 4) == ("fresh", "no checkpoint")
    (run / "checkpoint.pt").write_bytes(b"")
    assert compare.run_status(run, settings, 4)[0] == "resume"
    _write(run / "summary.json", {"steps": 4})
    assert compare.run_status(run, settings, 4)[0] == "resume"  # not exported yet
    (run / "final" / "discriminator").mkdir(parents=True)
    assert compare.run_status(run, settings, 4)[0] == "finished"
    assert compare.run_status(run, settings, 8)[0] == "resume"  # more steps asked for
    status, reason = compare.run_status(run, {**settings, "seed": 2}, 4)
    assert status == "fresh" and "seed" in reason


# ------------------------------------------------------------------------------------------ table and numbers
def test_mean_and_sample_std_on_hand_made_numbers():
    stats = aggregate([1.0, 2.0, None, 4.0])  # mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9, / (3 - 1)
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(7 / 3)
    assert stats["std"] == pytest.approx((21 / 9) ** 0.5) and (stats["min"], stats["max"]) == (1.0, 4.0)
    assert aggregate([0.5])["std"] is None and aggregate([None, float("nan")])["mean"] is None
    assert format_cell(aggregate([0.25, 0.35]), "percent") == "30.00 ± 7.07"  # std of {25, 35} %: 5·√2
    assert format_cell(aggregate([0.8]), "number") == "0.800"
    assert format_cell(aggregate([None]), "number") == "n/a"
    summary = summarize({"hc": {1: {"mlm_accuracy": 0.5, "rtd_auc": 0.7}, 2: {"mlm_accuracy": 0.7, "rtd_auc": None}},
                         "baseline": {1: {"mlm_accuracy": 0.4, "rtd_auc": 0.9}}})
    assert summary["hc"]["rtd_auc"]["n"] == 1 and summary["hc"]["mlm_accuracy"]["mean"] == pytest.approx(0.6)
    columns = (("mlm_accuracy", "MLM", "percent"), ("rtd_auc", "AUC", "number"), ("simlex999", "SimLex", "number"))
    assert markdown_table(summary, columns, seeds={"hc": 2, "baseline": 1}) == (
        "| variant | seeds | MLM | AUC |\n|---|---:|---:|---:|\n"
        "| hc | 2 | 60.00 ± 14.14 | 0.700 |\n| baseline | 1 | 40.00 | 0.900 |\n")


def test_curves_average_the_seeds():
    def history(corrected, evals):
        return [{"step": i + 1, "corrected": c, "masked": 10, **({"eval": {"gen_loss": evals[i + 1]}}
                                                                   if i + 1 in evals else {})}
                for i, c in enumerate(corrected)]

    a = history([1, 0, 0, 0, 0, 5], {1: 9.0, 3: 4.0, 6: 1.0})
    b = history([1, 0, 0, 0, 0, 1], {3: 2.0, 6: 2.0})
    assert compare_report._eval_curve([a, b], "gen_loss") == ([3, 6], [3.0, 1.5])  # step 1: one seed only
    # 5-step window over the pooled counts: steps 1-5 hold 2 of 100 masked, steps 2-6 hold 6 of 100
    assert compare_report._correction_curve([a, b]) == ([5, 6], [2.0, 6.0])


# ------------------------------------------------------------------------------------------ embedding-hc
def test_embedding_hc_table_from_vectors(files, tmp_path):
    out = tmp_path / "cmp"
    args = compare.parse_args(["--variants", "embedding-hc,hc", "--embedding-vectors", str(files / "glove.txt"),
                               "--embedding-k", "1", *common_flags(files, out)])
    shared, embedding = compare._tables(args, out)
    assert shared == files / "synonyms.pt" and embedding == out / "embedding-hc" / "synonyms.pt"
    assert tnops.SynonymTable.load(embedding).synonyms_of_word("large") == ["big"]
    built = embedding.stat().st_mtime_ns
    assert compare._tables(args, out)[1].stat().st_mtime_ns == built  # reused, not rebuilt
    flags = compare.variant_flags("embedding-hc", embedding, shared)
    assert flags == ["--sr-weight", "0", "--synonyms", str(embedding)]
    assert compare.variant_flags("hc", embedding, shared) == ["--sr-weight", "0", "--synonyms", str(shared)]
    assert compare.variant_flags("sentence-sr") == ["--no-hc", "--sr-weight", "0", "--sentence-sr", "1"]


# ------------------------------------------------------------------------------------------ one-line errors
@pytest.mark.parametrize("argv, words", [
    (["--variants", "baseline,bogus"], ["unknown variant 'bogus'", "baseline, hc, sr, hc+sr, sentence-sr"]),
    (["--seeds", "1,x"], ["--seeds", "1,2,3"]),
    (["--seeds", "1,1"], ["--seeds", "distinct"]),
    (["--seeds", "-2"], ["--seeds", ">= 0"]),
    (["--seed", "3"], ["--seed: give --seeds"]),
    (["--sr-weight", "2"], ["--sr-weight: the variants set it"]),
    (["--batch-size", "0"], ["electra-pretrain flag", "--batch-size"]),
    (["--bogus-flag"], ["electra-pretrain flag", "unrecognized arguments: --bogus-flag"]),
    (["--variants", "embedding-hc"], ["embedding-hc", "--embedding-vectors"]),
    (["--finetune", "glue9"], ["unknown task 'glue9'", "cola"]),
])
def test_bad_arguments_fail_with_one_line(argv, words, capsys, monkeypatch):
    def no_run(args):
        raise AssertionError("the arguments were accepted")

    monkeypatch.setattr(compare, "compare", no_run)
    with pytest.raises(SystemExit) as stop:
        compare.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("electra-compare: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)


def test_a_failing_run_names_its_variant_and_seed(files, tmp_path, capsys):
    flags = common_flags(files, tmp_path / "cmp")
    assert compare.main(["--variants", "sr", "--seeds", "3", *flags, "--corpus", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("electra-compare: error: sr seed 3: ") and err.count("\n") == 1, err
    assert "missing.txt" in err
    (tmp_path / "file").write_text("a file where the output folder should be")
    assert compare.main(["--variants", "sr", *common_flags(files, tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("electra-compare: error: --output-dir") and err.count("\n") == 1, err
