"""electra-pretrain --generator-from a BERT checkpoint (issue 15): the generator computes what the source model
computes, the fresh discriminator shares its embedding block, the run reports Table-2 ratios, Figure-3 examples
and summary.json, and other architectures are refused in one line."""
import json

import pytest
import torch

import tnops
from electra import init_from, pretrain
from electra.config import ElectraTNConfig
from electra.dataset import build_dataset
from electra.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")
SEQ = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained_generator")
    tokenizer = load_tokenizer()
    tnops.SynonymTable.from_wordnet(tokenizer, progress=False).save(root / "synonyms.pt")
    build_dataset(None, tokenizer, SEQ, root / "cache", 0, progress=False)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    bert = transformers.BertForMaskedLM(config).eval()
    bert.save_pretrained(root / "bert")
    return root, bert


def test_the_generator_is_the_bert_model_and_shares_its_embeddings(setup):
    root, bert = setup
    pretrained = init_from.load_pretrained(None, root / "bert")
    sizes = init_from.checkpoint_sizes(pretrained, "tiny")
    config = ElectraTNConfig.from_preset("tiny", hc=False, **sizes).for_tokenizer(pretrained.tokenizer)
    model = init_from.build_model(pretrained, config).eval()
    assert model.discriminator.electra.embeddings is model.generator.electra.embeddings
    assert model.generator.generator_lm_head.weight is model.word_embeddings
    assert model.discriminator.electra.embeddings_project.in_features == 32  # BERT width → the preset's 64
    ids = torch.randint(1000, 5000, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model.generator(ids).logits, bert(ids).logits, rtol=1e-5, atol=1e-5)


def test_a_run_reports_ratios_examples_and_summary(setup, tmp_path, capsys):
    root, _ = setup
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--generator-from", str(root / "bert"), "--max-seq-length", str(SEQ),
            "--batch-size", "8", "--max-steps", "3", "--log-every", "2", "--synonyms", str(root / "synonyms.pt"),
            "--cache-dir", str(root / "cache"), "--output-dir", str(out), "--no-progress", "--eval-batches", "1"]
    assert pretrain.main(argv) == 0
    printed = capsys.readouterr().out
    assert "hard correction over the run:" in printed and "held-out false negatives (Table 2)" in printed
    summary = json.loads((out / "summary.json").read_text())
    for key in ("masked", "corrected", "correction_rate_last_window", "fn_prediction_ratio", "fn_iteration_ratio",
                "seconds", "examples"):
        assert key in summary
    assert summary["masked"] > 0 and 0 <= summary["correction_rate_last_window"] <= 1
    assert 0 <= summary["fn_prediction_ratio"] <= 1 and summary["last_window_steps"] == 2
    generator = transformers.AutoModelForMaskedLM.from_pretrained(out / "final" / "generator")
    discriminator = transformers.AutoModelForPreTraining.from_pretrained(out / "final" / "discriminator")
    assert generator.config.hidden_size == 32 and discriminator.config.embedding_size == 32
    torch.testing.assert_close(discriminator.electra.embeddings.word_embeddings.weight,
                               generator.electra.embeddings.word_embeddings.weight)


def test_a_headless_checkpoint_gets_the_same_fresh_head_from_the_same_seed(setup, tmp_path):
    """BertModel has no MLM head: the generator's fresh head is initialised from --seed, so two runs of one command
    start (and end) alike, as electra-compare's variants must."""
    root, bert = setup
    bert.bert.save_pretrained(tmp_path / "bert_model")
    heads = []
    for run in ("a", "b"):
        argv = ["--preset", "tiny", "--generator-from", str(tmp_path / "bert_model"), "--max-seq-length", str(SEQ),
                "--batch-size", "4", "--max-steps", "1", "--synonyms", str(root / "synonyms.pt"), "--cache-dir",
                str(root / "cache"), "--output-dir", str(tmp_path / run), "--no-progress", "--eval-batches", "0"]
        assert pretrain.main(argv) == 0
        generator = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / run / "final" / "generator")
        heads.append(generator.generator_predictions.dense.weight)
    torch.testing.assert_close(heads[0], heads[1], rtol=0, atol=0)


def test_other_architectures_are_refused_in_one_line(setup, tmp_path, capsys):
    root, _ = setup
    config = transformers.RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                                        intermediate_size=32)
    transformers.RobertaForMaskedLM(config).save_pretrained(tmp_path / "roberta")
    capsys.readouterr()  # the save's own progress bar
    code = pretrain.main(["--preset", "tiny", "--generator-from", str(tmp_path / "roberta"), "--output-dir",
                          str(tmp_path / "out"), "--no-progress", "--cache-dir", str(root / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "supported: ELECTRA generators (ElectraForMaskedLM) and BERT checkpoints" in err


def test_correction_rates_of_the_run_and_its_last_window():
    from electra.report import correction_rates

    history = [{"step": 0, "eval": {}}] + [{"step": s, "masked": 100, "corrected": c}
                                           for s, c in enumerate([0, 0, 1, 3, 5], start=1)]
    rates = correction_rates(history, window=2)
    assert (rates["masked"], rates["corrected"]) == (500, 9)
    assert rates["correction_rate"] == 9 / 500 and rates["correction_rate_last_window"] == 8 / 200
    assert rates["last_window_steps"] == 2
