"""The pre-training CLI end to end on CPU: learning, exact resume, 2-process DDP, export, fn-stats, and the
hardening of issue 8: checkpoints read without unpickling code, checked hyper-parameters, non-finite losses
never trained on or exported, runs without evaluation finishing cleanly."""
import json
import os
import subprocess
import sys

import pytest
import torch

import tnops
from electra import fn_stats, pretrain
from electra.batches import eval_batches
from electra.dataset import build_dataset
from electra.tokenizer import load_tokenizer

SEQ = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tokenized built-in corpus and a WordNet table, built once for the module."""
    root = tmp_path_factory.mktemp("electra")
    tokenizer = load_tokenizer()
    table = root / "synonyms.pt"
    tnops.SynonymTable.from_wordnet(tokenizer, progress=False).save(table)
    build_dataset(None, tokenizer, SEQ, root / "cache", 0, progress=False)
    return root


def args_for(setup, out, *extra):
    return ["--preset", "tiny", "--max-seq-length", str(SEQ), "--batch-size", "8", "--synonyms",
            str(setup / "synonyms.pt"), "--cache-dir", str(setup / "cache"), "--output-dir", str(out),
            "--no-progress", "--eval-every", "1000", "--eval-batches", "2", *extra]


def final_params(out):
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


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
    assert torch.load(parts / "checkpoint.pt", weights_only=True)["step"] == 3  # plain tensors and values only
    pretrain.train(pretrain.parse_args(args_for(setup, parts, "--max-steps", "6", "--resume")))
    a, b = final_params(whole), final_params(parts)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _torchrun(setup, out, port, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), "-m", "electra.pretrain", *args_for(setup, out, *extra)],
                         capture_output=True, text=True, timeout=600, env=env, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_two_process_ddp_and_fsdp_equal_one_process(setup, tmp_path):
    """2 gloo ranks × 4 sequences = one process's global batch of 8: with DDP, and with --fsdp (FSDP2, one unit per
    encoder layer) stopped after step 1 and resumed from its full-state checkpoint: the same losses and final
    parameters as one process, an evaluation and an export."""
    common = ["--max-steps", "2", "--dropout", "0", "--eval-every", "2"]
    single = tmp_path / "single"
    pretrain.train(pretrain.parse_args(args_for(setup, single, *common)))
    _torchrun(setup, tmp_path / "ddp", 29731, *common, "--grad-accum", "1")
    for extra in (("--stop-after", "1"), ("--resume",)):
        _torchrun(setup, tmp_path / "fsdp", 29733, *common, "--fsdp", *extra)
    h1 = json.loads((single / "history.json").read_text())
    for name in ("ddp", "fsdp"):
        h2 = json.loads((tmp_path / name / "history.json").read_text())
        assert len(h2) == len(h1) == 2 and "eval" in h2[-1]
        for r1, r2 in zip(h1, h2):
            for key in ("loss", "gen_loss", "disc_loss", "sr_loss", "correction_rate"):
                assert r1[key] == pytest.approx(r2[key], rel=1e-4, abs=1e-6), (name, key)
        a, b = final_params(single), final_params(tmp_path / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
        assert (tmp_path / name / "final" / "discriminator" / "config.json").exists()


def test_fn_stats_counts_every_listed_mismatch(setup):
    from transformers import ElectraConfig, ElectraForMaskedLM

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=1, intermediate_size=32)
    generator = ElectraForMaskedLM(config)
    split = build_dataset(None, tokenizer, SEQ, setup / "cache", 0, progress=False).eval
    empty = tnops.SynonymTable.from_pairs([1], [2], len(tokenizer))
    base = fn_stats.false_negative_stats(generator, tokenizer, empty, split, batch_size=4, max_batches=2,
                                         prediction="argmax")
    assert base["corrected"] == 0 and 0 < base["mismatched"] <= base["masked"]
    # a table that lists exactly the mispredictions corrects all of them
    from electra.masking import mask_tokens
    pairs = ([], [])
    special = sorted(tokenizer.all_special_ids)
    for batch in list(eval_batches(split, 4))[:2]:
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
    assert "argument --max-steps: expected an integer >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--preset", "enormous"])


@pytest.mark.parametrize("flag, value", [
    ("--learning-rate", "nan"), ("--learning-rate", "inf"), ("--learning-rate", "0"), ("--learning-rate", "-1e-3"),
    ("--sr-weight", "nan"), ("--sr-weight", "-1"), ("--sentence-sr", "inf"), ("--dropout", "1"),
    ("--dropout", "nan"), ("--dropout", "-0.1"), ("--warmup-steps", "-1"), ("--batch-size", "0"),
    ("--grad-accum", "0"), ("--max-seq-length", "4"), ("--max-seq-length", "1024"), ("--eval-batches", "-1"),
    ("--eval-every", "0"), ("--save-every", "0"), ("--stop-after", "0"), ("--seed", "-1"), ("--max-steps", "1.5"),
    ("--label-smoothing", "1"), ("--label-smoothing", "-0.1"), ("--z-loss", "-1e-4"), ("--z-loss", "nan"),
])  # fmt: skip
def test_every_hyper_parameter_is_checked_naming_its_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain.parse_args([f"{flag}={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected " in err and value in err, err


class _RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint can do under weights_only=False."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_resume_refuses_a_checkpoint_that_would_run_code(setup, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "checkpoint.pt"
    torch.save({"model": _RunsCode(marker), "step": 1, "history": []}, evil)
    assert pretrain.main(args_for(setup, tmp_path / "run", "--max-steps", "2", "--resume", str(evil))) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    assert err.startswith("electra-pretrain: error: --resume: ") and str(evil) in err, err
    assert "is corrupt or is not a electra-pretrain checkpoint" in err and "run arbitrary code" in err, err


def test_resume_names_a_corrupt_or_incomplete_checkpoint(setup, tmp_path, capsys):
    truncated, incomplete = tmp_path / "truncated.pt", tmp_path / "incomplete.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "step": 1}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    torch.save({"model": {}, "step": 1, "history": []}, incomplete)
    for path, message in [(truncated, "is corrupt or is not a electra-pretrain checkpoint"),
                          (incomplete, "missing key(s) 'optimizer', 'scheduler', 'data', 'rng'"),
                          (tmp_path / "none.pt", "no such file")]:
        assert pretrain.main(args_for(setup, tmp_path / "run", "--max-steps", "2", "--resume", str(path))) == 2
        err = capsys.readouterr().err
        assert err.startswith("electra-pretrain: error: --resume: ") and message in err and str(path) in err, err


def test_a_non_finite_loss_stops_the_run_and_exports_nothing(setup, tmp_path, capsys):
    out = tmp_path / "run"  # lr 1e30 is finite and positive, so accepted; step 1's update overflows the weights
    assert pretrain.main(args_for(setup, out, "--max-steps", "3", "--learning-rate", "1e30", "--warmup-steps", "0",
                                  "--save-every", "1")) == 1
    err = capsys.readouterr().err
    assert "electra-pretrain: error: step 2: non-finite training loss" in err and "--on-nonfinite skip" in err, err
    assert not (out / "final").exists() and not (out / "history.json").exists()
    saved = torch.load(out / "checkpoint.pt", weights_only=True)  # step 1's, written before the NaN step
    assert saved["step"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())


def test_on_nonfinite_skip_skips_and_counts_the_step(setup, tmp_path, monkeypatch):
    from electra.modeling import ElectraTNForPretraining

    forward, calls = ElectraTNForPretraining.forward, []

    def poisoned(self, *args, **kwargs):  # the second training step's loss is NaN
        out = forward(self, *args, **kwargs)
        calls.append(self.training)
        if self.training and calls.count(True) == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(ElectraTNForPretraining, "forward", poisoned)
    out = tmp_path / "run"
    summary = pretrain.train(pretrain.parse_args(args_for(setup, out, "--max-steps", "3", "--on-nonfinite", "skip")))
    history = json.loads((out / "history.json").read_text())  # strict JSON: the NaN loss is written as null
    assert [r.get("skipped", False) for r in history] == [False, True, False]
    assert [r["nonfinite_skipped"] for r in history] == [0, 1, 1] and summary["nonfinite_skipped"] == 1
    assert history[1]["loss"] is None and history[2]["loss"] > 0
    params = final_params(out)
    assert all(torch.isfinite(v).all() for v in params.values()) and (out / "final" / "generator").is_dir()


@pytest.mark.parametrize("case", ["eval-batches-0", "one-example-corpus"])
def test_runs_without_any_evaluation_write_history_and_plot(setup, tmp_path, case):
    out = tmp_path / "run"
    if case == "eval-batches-0":
        argv = args_for(setup, out, "--max-steps", "2", "--eval-batches", "0")
    else:  # one example: nothing can be held out, so the final evaluation has no batch
        corpus = tmp_path / "one.txt"
        corpus.write_text("A single short sentence is the whole corpus.\n", encoding="utf-8")
        argv = args_for(setup, out, "--max-steps", "2", "--corpus", str(corpus), "--cache-dir", str(tmp_path / "c"),
                        "--batch-size", "1")
    summary = pretrain.train(pretrain.parse_args(argv))
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and not any("eval" in r for r in history)
    assert (out / "loss_curve.png").stat().st_size > 1000 and (out / "final" / "discriminator").is_dir()
    assert summary["plot"] == str(out / "loss_curve.png")


def test_label_smoothing_and_z_loss_flags_reach_the_config():
    """The flags become the generator's options (the model test checks what they do to its loss)."""
    from electra.trainer import _config

    args = pretrain.parse_args(["--preset", "tiny", "--label-smoothing", "0.2", "--z-loss", "0.1"])
    config = _config(args, load_tokenizer())
    assert (config.label_smoothing, config.z_loss) == (0.2, 0.1)
    assert (_config(pretrain.parse_args(["--preset", "tiny"]), load_tokenizer()).z_loss) == 0.0
