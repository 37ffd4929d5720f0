"""electra-eval and electra.lexsim: a real tiny export evaluated end to end (both halves, each half alone, the CLI),
the trainer's RTD inputs and labels reproduced exactly, and hand-made cases of every count and score."""
from __future__ import annotations

import json
import math
import random
import sys

import pytest
import torch

import tnops
from electra import eval as electra_eval
from electra import lexsim, pretrain
from electra.batches import eval_batches
from electra.config import ElectraTNConfig
from electra.dataset import build_dataset
from electra.modeling import ElectraTNForPretraining
from electra.tokenizer import load_tokenizer
from tests.conftest import table_from_pairs
from tnops.synonyms.vocab import load_vocab

SEQ = 16
WORDS = ("the cat sat on a mat while the dog ran to the park and a bird sang in the old tree near the river "
         "because people like quiet mornings with coffee bread and music before work starts in the city").split()


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """electra-pretrain's export of 2 tiny steps on a small corpus, with a dense synonym table (every corpus word
    lists ids 1000..15999, half the vocabulary), so sampled synonyms and hard corrections do occur."""
    root = tmp_path_factory.mktemp("electra_eval")
    rng = random.Random(0)
    paragraphs = [". ".join(" ".join(rng.choices(WORDS, k=rng.randint(6, 10))) for _ in range(2)) + "."
                  for _ in range(900)]  # a packed example per paragraph at L = 16: 9 held out
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(paragraphs))
    tokenizer = load_tokenizer()
    ids = sorted({i for word in WORDS for i in tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))})
    table = tnops.SynonymTable.from_rows({i: range(1000, 16000) for i in ids}, len(tokenizer),
                                         vocab_hash=load_vocab(tokenizer).hash)
    table.save(root / "synonyms.pt")
    with pytest.MonkeyPatch.context() as patch:  # the data cache in tmp, for pre-training and evaluation alike
        patch.setattr("electra.dataset.default_cache_dir", lambda: root / "cache")
        with pytest.MonkeyPatch.context() as plot:  # matplotlib: seconds, untested here; undone before the tests
            plot.setattr("electra.trainer.plot_history", lambda history, path: path)
            code = pretrain.main(["--preset", "tiny", "--max-steps", "2", "--max-seq-length", str(SEQ),
                                  "--batch-size", "4", "--eval-batches", "0", "--no-progress", "--output-dir",
                                  str(root / "run"), "--corpus", str(corpus), "--synonyms", str(root / "synonyms.pt")])
        assert code == 0
        yield {"final": root / "run" / "final", "corpus": str(corpus), "root": root, "tokenizer": tokenizer,
               "summary": json.loads((root / "run" / "summary.json").read_text())}


def run_eval(export, model, **options):
    return electra_eval.evaluate_model(model, corpus=export["corpus"], max_seq_length=SEQ, batch_size=4,
                                       progress=False, **options)


def check_reasons(result):
    assert set(result) == {*electra_eval.KEYS, "reasons"}
    assert set(result["reasons"]) == {key for key in electra_eval.KEYS if result[key] is None}
    assert all(isinstance(reason, str) and reason and "\n" not in reason for reason in result["reasons"].values())


# ---- end to end on the real export ----------------------------------------------------------------------------------

def test_both_halves_give_every_score_in_range(export):
    result = run_eval(export, export["final"])  # max_batches 8 × 4: the sequences the run's summary.json counted
    check_reasons(result)
    assert result["reasons"] == {}
    for key in ("mlm_accuracy", "mlm_accuracy_synonym", "fn_prediction_ratio", "fn_iteration_ratio", "rtd_accuracy",
                "rtd_auc", "rtd_synonym_original"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["mlm_accuracy"] <= result["mlm_accuracy_synonym"]
    assert -1.0 <= result["simlex999"] <= 1.0 and -1.0 <= result["wordsim353"] <= 1.0
    assert 900 < result["simlex999_pairs"] <= 999 and 300 < result["wordsim353_pairs"] <= 353
    # the held-out split, masks and samples of pre-training: the run's own end-of-run fn-stats agree
    summary = export["summary"]
    assert (result["masked"], result["sequences"]) == (summary["fn_masked"], summary["fn_sequences"])
    assert result["fn_prediction_ratio"] == pytest.approx(summary["fn_prediction_ratio"])
    assert result["fn_iteration_ratio"] == pytest.approx(summary["fn_iteration_ratio"])


def test_the_rtd_inputs_and_labels_are_the_trainers(export):
    """corrupt_batch reproduces ElectraTNForPretraining.forward's corrupted ids and discriminator labels."""
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    final, tokenizer = export["final"], export["tokenizer"]
    config = ElectraTNConfig.load(final / "electra_tn_config.json")
    table = tnops.SynonymTable.load(final / "synonyms.pt", vocab=tokenizer)
    model = ElectraTNForPretraining(config, table, discriminator=ElectraForPreTraining.from_pretrained(
        final / "discriminator"), generator=ElectraForMaskedLM.from_pretrained(final / "generator")).eval()
    split = build_dataset(export["corpus"], tokenizer, SEQ, cache_dir=export["root"] / "cache", progress=False).eval
    batch = next(iter(eval_batches(split, 4)))
    with torch.no_grad():
        trainer = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, seed=5, sequence_offset=0)
        ours = electra_eval.corrupt_batch(model.generator, batch, tokenizer, table, {"hc": True, "temperature": 1.0},
                                          seed=5, max_predictions=config.max_predictions)
    assert torch.equal(ours["corrupted"], trainer.corrupted_ids)
    assert torch.equal(ours["labels"], trainer.disc_labels)
    assert int(trainer.stats["corrected"]) > 0  # the dense table makes hard correction relabel some samples


def test_a_discriminator_alone_has_no_generator_scores(export, monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)  # gensim missing: the lexical scores say so
    result = run_eval(export, export["final"] / "discriminator")
    check_reasons(result)
    assert set(result["reasons"]) == set(electra_eval.KEYS)
    assert "no generator" in result["reasons"]["mlm_accuracy"] and "no generator" in result["reasons"]["rtd_auc"]
    assert result["reasons"]["simlex999"] == "gensim not installed: pip install 'tnops[eval]'"


def test_an_empty_held_out_split_gives_reasons(export, tmp_path):
    corpus = tmp_path / "one.txt"
    corpus.write_text("A single short paragraph makes one packed example, and none is held out.")
    result = electra_eval.evaluate_model(export["final"], corpus=str(corpus), max_seq_length=SEQ, progress=False)
    check_reasons(result)
    assert set(result["reasons"]) == {"mlm_accuracy", "mlm_accuracy_synonym", "fn_prediction_ratio",
                                      "fn_iteration_ratio", "rtd_accuracy", "rtd_auc", "rtd_synonym_original",
                                      "masked", "sequences"}
    assert all("the held-out split is empty" in reason for reason in result["reasons"].values())


def test_cli_on_a_generator_alone_writes_json_and_prints_a_table(export, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = electra_eval.main(["--model", str(export["final"] / "generator"), "--corpus", export["corpus"],
                              "--max-seq-length", str(SEQ), "--batch-size", "2", "--max-batches", "1", "--json",
                              str(out), "--no-progress"])
    assert code == 0
    saved = json.loads(out.read_text())
    check_reasons(saved)
    assert set(saved["reasons"]) == {"rtd_accuracy", "rtd_auc", "rtd_synonym_original"}  # no discriminator
    assert "no discriminator" in saved["reasons"]["rtd_auc"]
    assert saved["sequences"] == 2 and saved["masked"] > 0 and saved["simlex999"] is not None
    printed = capsys.readouterr().out
    assert "generator MLM accuracy (argmax)" in printed and f"{100 * saved['mlm_accuracy']:6.2f} %" in printed
    assert "RTD ROC AUC" in printed and "n/a: no discriminator" in printed


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "--model: no such directory"),
    (lambda root: root, "holds no model: expected electra-pretrain's OUTPUT_DIR/final"),
    (lambda root: (root / "config.json").write_text('{"architectures": ["BertModel"]}') and root,
     "holds a BertModel"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, make, message):
    assert electra_eval.main(["--model", str(make(tmp_path)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("electra-eval: error: ") and message in err and err.count("\n") == 1


def test_cli_refuses_a_missing_synonym_table(export, capsys):
    code = electra_eval.main(["--model", str(export["final"]), "--synonyms", "nowhere.pt", "--max-seq-length",
                              str(SEQ), "--no-progress"])
    assert code == 2 and "--synonyms: no such file: 'nowhere.pt'" in capsys.readouterr().err


# ---- hand-made cases ------------------------------------------------------------------------------------------------

def test_synonym_credited_accuracy_on_a_crafted_batch():
    table = table_from_pairs([(3, 4), (5, 6)], 10)
    predictions = torch.tensor([[3, 4, 4, 9], [6, 5, 0, 1]])
    gold = torch.tensor([[3, 3, 3, 9], [5, 5, 0, 2]])
    valid = torch.tensor([[True, True, False, False], [True, True, True, False]])
    # masked 5; exact: (3,3), (5,5), (0,0) -> 3; plus synonyms 4 of 3, 6 of 5 -> 5. Not counted: the padding rows
    # (an exact 9 and a synonym 4 of 3)
    assert electra_eval.masked_lm_counts(predictions, gold, valid, table).tolist() == [5, 3, 5]
    # the table is directed: 3 is not listed for 4
    assert electra_eval.masked_lm_counts(torch.tensor([[3]]), torch.tensor([[4]]), torch.tensor([[True]]),
                                         table).tolist() == [1, 0, 0]


def test_replaced_token_labels_on_a_crafted_batch():
    input_ids = torch.tensor([[1, 2, 3, 4]])
    positions, valid = torch.tensor([[1, 3]]), torch.tensor([[True, True]])
    corrupted, labels = electra_eval.replaced_token_labels(input_ids, positions, valid, torch.tensor([[7, 4]]),
                                                           torch.tensor([[False, False]]))
    assert corrupted.tolist() == [[1, 7, 3, 4]] and labels.tolist() == [[False, True, False, False]]  # 4 drew 4
    _, labels = electra_eval.replaced_token_labels(input_ids, positions, valid, torch.tensor([[7, 4]]),
                                                   torch.tensor([[True, False]]))
    assert labels.tolist() == [[False, False, False, False]]  # hard correction: the synonym 7 counts as original
    corrupted, _ = electra_eval.replaced_token_labels(input_ids, positions, torch.tensor([[True, False]]),
                                                      torch.tensor([[7, 9]]), torch.tensor([[False, False]]))
    assert corrupted.tolist() == [[1, 7, 3, 4]]  # a padding row writes its own token back


def test_rtd_scores_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0])
    labels = torch.tensor([True, False, False, False, True])
    synonym_rows = torch.tensor([False, True, True, False, True])
    scores, reasons = electra_eval.rtd_scores(logits, labels, synonym_rows)
    # predicted replaced (logit > 0): T F T F F -> right on 0, 1, 3 -> 3/5; AUC: positives 2.0, 0.0 vs negatives
    # -1, .5, -3: 2.0 beats all 3, 0.0 beats -1 and -3 -> 5/6; synonym rows -1, 0.0 (original), 0.5 -> 2/3
    assert scores == {"rtd_accuracy": 0.6, "rtd_auc": pytest.approx(5 / 6), "rtd_synonym_original": 2 / 3}
    assert reasons == {}
    scores, reasons = electra_eval.rtd_scores(logits, torch.zeros(5, dtype=torch.bool), torch.zeros(5, dtype=bool))
    assert scores["rtd_auc"] is None and scores["rtd_synonym_original"] is None and scores["rtd_accuracy"] == 0.6
    assert "the AUC needs both classes" in reasons["rtd_auc"] and "no replacement" in reasons["rtd_synonym_original"]


@pytest.fixture
def four_words(tmp_path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "dog", "car", "tree", "##s"]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    angle = math.radians(10)
    embeddings = torch.zeros(len(vocab), 2)
    # unit directions at 0°, 10°, 90°, 180° with lengths 1, 0.1, 20, 1 (a dot product would rank them otherwise)
    embeddings[5:9] = torch.tensor([[1.0, 0.0], [0.1 * math.cos(angle), 0.1 * math.sin(angle)], [0.0, 20.0],
                                    [-1.0, 0.0]])
    return tokenizer, embeddings


def test_similarity_spearman_of_a_four_word_table(four_words):
    tokenizer, embeddings = four_words
    pairs = [("cat", "dog", 9.0),   # cos 0.985 (rank 4); human rank 4
             ("cat", "car", 5.0),   # cos 0     (rank 2); human rank 3
             ("cat", "tree", 1.0),  # cos -1    (rank 1); human rank 1
             ("DOG", "Car", 2.0),   # cos 0.174 (rank 3); human rank 2 -- upper case: lower-cased, counted
             ("cats", "dog", 3.0),  # two pieces: left out
             ("bird", "cat", 4.0)]  # unknown: left out
    rho, n = lexsim.similarity_scores(embeddings, tokenizer, pairs)
    assert n == 4
    assert rho == pytest.approx(1 - 6 * (0 + 1 + 0 + 1) / (4 * (4 ** 2 - 1)))  # 0.8
    with pytest.raises(ValueError, match="only 1 of 2 pairs"):
        lexsim.similarity_scores(embeddings, tokenizer, [("cat", "dog", 1.0), ("cat", "bird", 2.0)])
    with pytest.raises(TypeError, match="embeddings"):
        lexsim.similarity_scores(embeddings.long(), tokenizer, pairs)


def test_load_pairs_reads_both_formats(tmp_path, monkeypatch):
    simlex, wordsim = lexsim.load_pairs("simlex999"), lexsim.load_pairs("wordsim353")
    assert len(simlex) == 999 and simlex[0] == ("old", "new", 1.58)
    assert len(wordsim) == 353 and wordsim[0] == ("love", "sex", 6.77) and ("stock", "CD", 1.31) in wordsim
    path = tmp_path / "pairs.tsv"
    path.write_text("# a comment\n\nwarm\thot\t7.5\n  # indented comment\ncold  ice 8\n")
    assert lexsim.load_pairs(path) == [("warm", "hot", 7.5), ("cold", "ice", 8.0)]
    path.write_text("warm\thot\n")
    with pytest.raises(ValueError, match=r"pairs.tsv:1: expected 'word1<TAB>word2<TAB>score'"):
        lexsim.load_pairs(path)
    path.write_text("warm\thot\tnan\n")
    with pytest.raises(ValueError, match="finite score"):
        lexsim.load_pairs(path)
    with pytest.raises(FileNotFoundError, match="simlex999"):
        lexsim.load_pairs(tmp_path / "none.txt")
    monkeypatch.setitem(sys.modules, "gensim", None)
    with pytest.raises(ImportError, match=r"gensim not installed: pip install 'tnops\[eval\]'"):
        lexsim.load_pairs("wordsim353")
