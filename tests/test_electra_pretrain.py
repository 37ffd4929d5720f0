"""The pre-training CLI end to end on CPU: learning, exact resume, 2-process DDP, export, fn-stats."""
import json
import os
import subprocess
import sys

import pytest
import torch

import tnops
from electra import data as edata
from electra import fn_stats, pretrain

SEQ = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tokenized built-in corpus and a WordNet table, built once for the module."""
    root = tmp_path_factory.mktemp("electra")
    tokenizer = edata.load_tokenizer()
    table = root / "synonyms.pt"
    tnops.SynonymTable.from_wordnet(tokenizer, progress=False).save(table)
    edata.build_dataset(None, tokenizer, SEQ, root / "cache", 0, progress=False)
    return root


def args_for(setup, out, *extra):
    return ["--preset", "tiny", "--max-seq-length", str(SEQ), "--batch-size", "8", "--synonyms",
            str(setup / "synonyms.pt"), "--cache-dir", str(setup / "cache"), "--output-dir", str(out),
            "--no-progress", "--eval-every", "1000", "--eval-batches", "2", *extra]


def final_params(out):
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def test_thirty_steps_lower_the_loss_and_export(setup, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    out = tmp_path / "run"
    summary = pretrain.train(pretrain.parse_args(args_for(setup, out, "--max-steps", "30", "--learning-rate", "2e-3",
                                                          "--warmup-steps", "3")))
    history = json.loads((out / "history.json").read_text())
    first = sum(r["loss"] for r in history[:5]) / 5
    last = sum(r["loss"] for r in history[-5:]) / 5
    assert last < first * 0.9, (first, last)
    assert "eval" in history[-1] and history[-1]["eval"]["loss"] > 0
    assert all(r["masked"] > 0 and 0 <= r["corrected"] <= r["masked"] for r in history)
    assert all(r["correction_rate"] == pytest.approx(r["corrected"] / r["masked"]) for r in history)
    assert (out / "loss_curve.png").stat().st_size > 10_000
    disc = AutoModelForPreTraining.from_pretrained(summary["export"]["discriminator"])
    gen = AutoModelForMaskedLM.from_pretrained(summary["export"]["generator"])
    assert disc.config.hidden_size == 64 and gen.config.hidden_size == 16
    stats = fn_stats.main(["--model", str(out / "final"), "--max-seq-length", str(SEQ), "--max-batches", "1",
                           "--json"])
    assert stats == 0


def test_resume_continues_exactly(setup, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain.train(pretrain.parse_args(args_for(setup, whole, "--max-steps", "6")))
    pretrain.train(pretrain.parse_args(args_for(setup, parts, "--max-steps", "6", "--stop-after", "3")))
    assert torch.load(parts / "checkpoint.pt", weights_only=False)["step"] == 3
    pretrain.train(pretrain.parse_args(args_for(setup, parts, "--max-steps", "6", "--resume")))
    a, b = final_params(whole), final_params(parts)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_gloo_equals_one_process(setup, tmp_path):
    common = ["--max-steps", "2", "--dropout", "0"]
    single = tmp_path / "single"
    pretrain.train(pretrain.parse_args(args_for(setup, single, *common)))
    double = tmp_path / "double"  # two ranks × 4 sequences = the same global batch of 8
    common += ["--grad-accum", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29731", "-m", "electra.pretrain", *args_for(setup, double, *common)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    h1 = json.loads((single / "history.json").read_text())
    h2 = json.loads((double / "history.json").read_text())
    for r1, r2 in zip(h1, h2):
        for key in ("loss", "gen_loss", "disc_loss", "sr_loss", "correction_rate"):
            assert r1[key] == pytest.approx(r2[key], rel=1e-4, abs=1e-6), key
    a, b = final_params(single), final_params(double)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_fn_stats_counts_every_listed_mismatch(setup):
    from transformers import ElectraConfig, ElectraForMaskedLM

    tokenizer = edata.load_tokenizer()
    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=1, intermediate_size=32)
    generator = ElectraForMaskedLM(config)
    split = edata.build_dataset(None, tokenizer, SEQ, setup / "cache", 0, progress=False).eval
    empty = tnops.SynonymTable.from_pairs([1], [2], len(tokenizer))
    base = fn_stats.false_negative_stats(generator, tokenizer, empty, split, batch_size=4, max_batches=2,
                                         prediction="argmax")
    assert base["corrected"] == 0 and 0 < base["mismatched"] <= base["masked"]
    # a table that lists exactly the mispredictions corrects all of them
    from electra.masking import mask_tokens
    pairs = ([], [])
    special = sorted(tokenizer.all_special_ids)
    for batch in list(edata.eval_batches(split, 4))[:2]:
        masked = mask_tokens(batch.input_ids, batch.attention_mask, special_token_ids=special,
                             mask_token_id=tokenizer.mask_token_id, seed=0, sequence_offset=batch.global_offset,
                             max_predictions=int(0.155 * SEQ))
        with torch.no_grad():
            logits = generator(masked.input_ids, attention_mask=batch.attention_mask,
                               token_type_ids=batch.token_type_ids).logits
        pred = logits.argmax(-1)
        wrong = masked.selected & (pred != batch.input_ids)
        pairs[0].extend(batch.input_ids[wrong].tolist())
        pairs[1].extend(pred[wrong].tolist())
    table = tnops.SynonymTable.from_pairs(pairs[0], pairs[1], len(tokenizer))
    full = fn_stats.false_negative_stats(generator, tokenizer, table, split, batch_size=4, max_batches=2,
                                         prediction="argmax")
    assert full["corrected"] == full["mismatched"] == base["mismatched"]
    assert full["prediction_level"] == 1.0 and full["iteration_level"] > 0


def test_cli_argument_errors(capsys):
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--max-steps", "0"])
    assert "--max-steps must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--preset", "enormous"])
