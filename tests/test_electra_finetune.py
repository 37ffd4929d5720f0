"""electra-finetune: GLUE's TSV layouts read row by row, the papers' metrics, a real tiny export fine-tuned end to end
(the command and the function), a trained-to-memorise check, and the one-line errors."""
import json
import sys
import types

import numpy as np
import pytest
import torch

import tnops
from electra import finetune as ft
from electra.config import ElectraTNConfig
from electra.glue import TASKS, GlueExamples, load_glue, read_tsv
from electra.modeling import ElectraTNForPretraining
from electra.tokenizer import load_tokenizer
from tnops.synonyms.vocab import load_vocab

# GLUE's own layouts (headers and extra columns as its download script leaves them), each with a bare double quote
# in the text (csv.QUOTE_NONE must keep it; SST-2 and RTE have fields that start with one, which csv's default
# quoting would strip or run on into the next lines), and the examples they hold: (text_a, text_b or None, label id).
LAYOUTS = {
    "cola": (None, [["gj04", "1", "", 'Our friends won\'t buy this "analysis.'], ["gj04", "0", "*", "They drank pub."]],
             [('Our friends won\'t buy this "analysis.', None, 1), ("They drank pub.", None, 0)]),
    "sst2": ("sentence\tlabel", [['a "charming journey ', "1"], ['"dull" and "lifeless', "0"], ["fun", "1"]],
             [('a "charming journey ', None, 1), ('"dull" and "lifeless', None, 0), ("fun", None, 1)]),
    "mrpc": ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
             [["0", "702876", "702977", 'He said " no', "He said yes"], ["1", "2108705", "2108831", "a b", "b a"]],
             [('He said " no', "He said yes", 0), ("a b", "b a", 1)]),
    "stsb": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
             [["0", "main-captions", "MSRvid", "2012", "0001", "none", "none", "A plane.", 'An "air plane.', "5.000"],
              ["1", "main-news", "MSRpar", "2012test", "0002", "none", "none", "x", "y", "0.250"]],
             [("A plane.", 'An "air plane.', 5.0), ("x", "y", 0.25)]),
    "qqp": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
            [["7", "15", "16", 'How do "I', "How can I?", "1"], ["8", "17", "18", "Why?"],  # a broken row: skipped
             ["9", "19", "20", "What?", "Who?", "0"]],
            [('How do "I', "How can I?", 1), ("What?", "Who?", 0)]),
    "mnli": ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
             "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
             [["0", "31193", "31193n", "government", "( a )", "( b )", "(ROOT a)", "(ROOT b)", 'It "is.', "It is not.",
               "neutral", "neutral"],
              ["1", "101457", "101457e", "telephone", "", "", "", "", "p", "h", "entailment", "entailment"],
              ["2", "134793", "134793c", "fiction", "", "", "", "", "q", "k", "neutral", "contradiction"]],
             [('It "is.', "It is not.", 1), ("p", "h", 0), ("q", "k", 2)]),
    "qnli": ("index\tquestion\tsentence\tlabel",
             [["0", 'What "is it?', "It is a cat.", "entailment"], ["1", "Who?", "Nobody.", "not_entailment"]],
             [('What "is it?', "It is a cat.", 0), ("Who?", "Nobody.", 1)]),
    "rte": ("index\tsentence1\tsentence2\tlabel",
            [["0", '"A cat," he said.', 'A "cat.', "entailment"], ["1", "Dogs bark.", "Cats bark.", "not_entailment"]],
            [('"A cat," he said.', 'A "cat.', 0), ("Dogs bark.", "Cats bark.", 1)]),
}


def write_tsv(path, header, rows):
    lines = ([header] if header else []) + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def write_task(directory, task, header, rows, dev_rows=None):
    directory.mkdir(parents=True, exist_ok=True)
    write_tsv(directory / "train.tsv", header, rows)
    write_tsv(directory / ("dev_matched.tsv" if task == "mnli" else "dev.tsv"), header, dev_rows or rows)
    return directory


@pytest.mark.parametrize("task", TASKS)
def test_each_tasks_tsv_layout_gives_its_rows_and_labels(task, tmp_path):
    header, rows, expected = LAYOUTS[task]
    train, dev = load_glue(task, write_task(tmp_path, task, header, rows, dev_rows=rows[::-1]))
    for examples, order in ((train, expected), (dev, expected[::-1])):
        assert examples.texts_a == [a for a, _, _ in order]
        assert examples.texts_b == (None if order[0][1] is None else [b for _, b, _ in order])
        assert examples.labels == [label for _, _, label in order]
        assert all(type(label) is (float if task == "stsb" else int) for label in examples.labels)


def test_tsv_errors_name_the_task_the_file_and_the_columns(tmp_path):
    header, rows, _ = LAYOUTS["rte"]
    bad = write_tsv(tmp_path / "no_label.tsv", "index\tsentence1\tsentence2\tgold", [r[:3] + ["x"] for r in rows])
    with pytest.raises(ValueError, match=r"rte: .*no_label\.tsv lacks the column\(s\) 'label'; expected a header "
                                         r"with the columns 'sentence1', 'sentence2', 'label'"):
        read_tsv("rte", bad)
    short = write_tsv(tmp_path / "short.tsv", header, [rows[0], ["1", "only one sentence"]])
    with pytest.raises(ValueError, match=r"rte: .*short\.tsv line 3 has 2 field\(s\), expected at least 4"):
        read_tsv("rte", short)
    unknown = write_tsv(tmp_path / "unknown.tsv", header, [["0", "a", "b", "maybe"]])
    with pytest.raises(ValueError, match=r"rte: .*unknown\.tsv line 2: unknown label 'maybe'; expected one of "
                                         r"entailment, not_entailment"):
        read_tsv("rte", unknown)
    with pytest.raises(ValueError, match=r"task: expected one of cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, "
                                         r"got 'wnli'"):
        load_glue("wnli", tmp_path)
    write_tsv(tmp_path / "train.tsv", header, rows)
    with pytest.raises(FileNotFoundError, match=r"rte: no such file: .*dev\.tsv; expected GLUE's dev\.tsv with a "
                                                r"header with the columns 'sentence1', 'sentence2', 'label'"):
        load_glue("rte", tmp_path)


class FakeTable:
    def __init__(self, columns):
        self.columns = columns
        self.column_names = list(columns)

    def __getitem__(self, name):
        return self.columns[name]


def test_the_hub_is_read_through_datasets_and_its_absence_asks_for_data_dir(monkeypatch):
    calls = []

    def load_dataset(name, config):
        calls.append((name, config))
        return {"train": FakeTable({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, 0]}),
                "validation_matched": FakeTable({"premise": ["p3"], "hypothesis": ["h3"], "label": [1]})}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    train, dev = load_glue("mnli")
    assert calls == [("nyu-mll/glue", "mnli")]
    assert (train.texts_a, train.texts_b, train.labels) == (["p1", "p2"], ["h1", "h2"], [2, 0])
    assert (dev.texts_a, dev.texts_b, dev.labels) == (["p3"], ["h3"], [1])

    def offline(name, config):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(ValueError, match=r"^cola: cannot load GLUE from the Hugging Face hub \(ConnectionError: "
                                         r"Couldn't reach .* pass --data-dir DIR holding GLUE's cola train\.tsv"):
        load_glue("cola")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed: import fails at once
    with pytest.raises(ValueError, match=r"^rte: no --data-dir, and the datasets library is not installed; pass "
                                         r"--data-dir DIR holding GLUE's rte train\.tsv and dev\.tsv"):
        load_glue("rte")


def test_metrics_per_task_on_hand_computed_cases():
    # CoLA: argmax of the logits gives predictions [1, 1, 0, 0] against labels [1, 0, 0, 0]: TP 1, FP 1, FN 0, TN 2,
    # MCC = (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2) = 2 / sqrt(12)
    logits = np.array([[0.0, 2.0], [-1.0, 0.5], [3.0, 1.0], [0.2, 0.1]])
    values, reasons = ft.glue_metrics("cola", logits, np.array([1, 0, 0, 0]))
    assert values == {"matthews": pytest.approx(2 / 12 ** 0.5)} and reasons == {}
    # MRPC: the same predictions: accuracy 3/4, F1 of class 1 = 2*1 / (2*1 + 1 + 0) = 2/3
    values, _ = ft.glue_metrics("mrpc", logits, [1, 0, 0, 0])
    assert values == {"accuracy": 0.75, "f1": pytest.approx(2 / 3)}
    # STS-B: [N, 1] scores; ranks (1, 3, 2) against (1, 2, 3): Spearman 1 - 6*2 / (3*8) = 0.5
    values, _ = ft.glue_metrics("stsb", np.array([[0.1], [0.9], [0.5]]), [1.0, 2.0, 4.0])
    assert values["spearman"] == pytest.approx(0.5)
    assert values["pearson"] == pytest.approx(np.corrcoef([0.1, 0.9, 0.5], [1.0, 2.0, 4.0])[0, 1])
    # MNLI: three classes, 2 of 3 right
    values, _ = ft.glue_metrics("mnli", np.array([[0, 1, 5], [9, 1, 0], [0, 3, 1]]), [2, 0, 0])
    assert values == {"accuracy": pytest.approx(2 / 3)}
    # a constant regression output: the correlations are undefined, None with the reason, never a number
    values, reasons = ft.glue_metrics("stsb", np.full((3, 1), 0.5), [1.0, 2.0, 4.0])
    assert values == {"spearman": None, "pearson": None} and "constant" in reasons["spearman"]
    assert [ft.primary_metric(t) for t in TASKS] == ["matthews", "accuracy", "accuracy", "spearman", "accuracy",
                                                     "accuracy", "accuracy", "accuracy"]


def test_examples_are_tokenized_as_pairs_in_chunks():
    tokenizer = load_tokenizer()
    examples = GlueExamples(["a cat sat", "hello world", 'x " y'], ["on a mat", "again", "z"], [0, 1, 0])
    chunked, whole = ft._encode(tokenizer, examples, 8, chunk=2), ft._encode(tokenizer, examples, 8)
    assert len(chunked) == 3 and [chunked[i] for i in range(3)] == [whole[i] for i in range(3)]
    assert chunked[2]["labels"] == 0 and chunked[1]["labels"] == 1
    expected = tokenizer("hello world", "again")  # [CLS] hello world [SEP] again [SEP]
    assert chunked[1]["input_ids"] == expected["input_ids"] and chunked[1]["token_type_ids"] == [0] * 4 + [1] * 2
    assert len(chunked[0]["input_ids"]) == 8  # 3 + 3 words and 3 specials, truncated to max_seq_length


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny-preset ELECTRA-TN written by the exporter electra-pretrain ends with (``save_pretrained``: final/ with
    discriminator/ and generator/, the tokenizer beside each); untrained, which fine-tuning does not mind, and ~4 s
    cheaper than a 2-step ``electra-pretrain`` run (its training, plot and report)."""
    final = tmp_path_factory.mktemp("finetune") / "final"
    tokenizer = load_tokenizer()
    size = len(tokenizer)
    table = tnops.SynonymTable(torch.zeros(size + 1, dtype=torch.int32), torch.zeros(0, dtype=torch.int32),
                               vocab_hash=load_vocab(tokenizer).hash)
    torch.manual_seed(0)
    model = ElectraTNForPretraining(ElectraTNConfig.from_preset("tiny").for_tokenizer(tokenizer), synonyms=table)
    model.save_pretrained(final, tokenizer)
    return final


SENTENCES = [("a wonderful and moving film", "1"), ("dull , lifeless and far too long", "0"),
             ("the best picture of the year", "1"), ("a tedious mess from start to finish", "0"),
             ("charming performances all around", "1"), ("i wanted my money back", "0"),
             ("smart funny and full of heart", "1"), ("the plot makes no sense at all", "0")]


def test_the_command_memorises_eight_rows_and_writes_results(export, tmp_path, capsys):
    # dev holds the training rows shuffled: a label misaligned with its text (shifted, reversed) cannot reach 1.0
    data = write_task(tmp_path / "sst2", "sst2", "sentence\tlabel", [list(r) for r in SENTENCES],
                      dev_rows=[list(SENTENCES[i]) for i in (3, 0, 6, 1, 4, 7, 2, 5)])
    out = tmp_path / "out"
    assert ft.main(["--model", str(export), "--task", "SST2", "--data-dir", str(data), "--output-dir", str(out),
                    "--max-steps", "12", "--batch-size", "8", "--learning-rate", "1e-2", "--max-seq-length", "16",
                    "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("sst2 dev: accuracy 1.0000 (8 examples; trained 12 steps on 8 examples in ")
    results = json.loads((out / "results.json").read_text())
    assert results["accuracy"] == 1.0 and results["eval_loss"] < 0.3
    assert results["task"] == "sst2" and results["primary"] == "accuracy"
    assert (results["steps"], results["train_samples"], results["eval_samples"]) == (12, 8, 8)
    assert results["model"] == str(export / "discriminator") and results["seconds"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no Trainer checkpoints


def test_the_function_fine_tunes_stsb_regression(export, tmp_path):
    rows = [[str(i), "g", "f", "y", str(i), "n", "n", a, b, f"{i % 6}.0"]
            for i, (a, b) in enumerate(zip([s for s, _ in SENTENCES], [s for s, _ in SENTENCES[1:] + SENTENCES[:1]]))]
    data = write_task(tmp_path / "stsb", "stsb", LAYOUTS["stsb"][0], rows)
    results = ft.finetune(export / "discriminator", "stsb", tmp_path / "out", data_dir=data, max_steps=2,
                          batch_size=4, max_seq_length=16, max_train_samples=6, max_eval_samples=5, progress=False)
    assert results == json.loads((tmp_path / "out" / "results.json").read_text())
    assert (results["task"], results["primary"], results["steps"]) == ("stsb", "spearman", 2)
    assert (results["train_samples"], results["eval_samples"]) == (6, 5)
    for name in ("spearman", "pearson"):
        assert -1.0 <= results[name] <= 1.0
    assert np.isfinite(results["eval_loss"])  # MSE of the one regression output


def test_one_line_errors_before_any_training(export, tmp_path, capsys):
    header, rows, _ = LAYOUTS["rte"]
    good = write_task(tmp_path / "rte", "rte", header, rows)
    (tmp_path / "nodev").mkdir()
    write_tsv(tmp_path / "nodev" / "train.tsv", header, rows)
    bad = write_task(tmp_path / "bad", "rte", "index\tpremise\thypothesis\tlabel", rows)
    (tmp_path / "gen_only" / "generator").mkdir(parents=True)
    cases = [
        (["--model", str(tmp_path / "gen_only"), "--data-dir", str(good)], "holds no discriminator (only generator/"),
        (["--model", str(export / "generator"), "--data-dir", str(good)], "is a generator (ElectraForMaskedLM)"),
        (["--model", str(tmp_path / "missing"), "--data-dir", str(good)], "--model: no such directory"),
        (["--model", str(export), "--data-dir", str(tmp_path / "nodev")],
         f"rte: no such file: {tmp_path / 'nodev' / 'dev.tsv'}; expected GLUE's dev.tsv with a header"),
        (["--model", str(export), "--data-dir", str(bad)],
         f"rte: {bad / 'train.tsv'} lacks the column(s) 'sentence1', 'sentence2'; expected a header with the columns"),
    ]
    for flags, message in cases:
        assert ft.main([*flags, "--task", "rte", "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("electra-finetune: error: ") and message in err, err
    with pytest.raises(SystemExit) as stop:
        ft.main(["--model", str(export), "--task", "wnli", "--output-dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "argument --task: invalid choice: 'wnli'" in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        ft.finetune(export, "rte", tmp_path / "out", data_dir=good, batch_size=0)
