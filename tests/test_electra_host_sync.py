"""The ELECTRA step stays off the host: no statistic, count or mask is read back to Python inside the model's
forward or a training step; the numbers reach Python only when the trainer logs.

A CPU test cannot count device synchronisations, so it watches for what causes them: every tensor method that
reads a value to the host (``item``, ``tolist``, ``bool()``, ``int()``, ``float()``, ...) and every
data-dependent shape (``nonzero``, boolean-mask indexing), attributed to the nearest calling frame outside
torch.  Reads made inside tnops (CPU-only argument checks; CUDA uses ``_assert_async``) and transformers are
not electra's and are not counted here.
"""
import json
import traceback
from pathlib import Path

import pytest
import torch
from test_electra_model import batch, synonym_table, tiny_config
from torch.overrides import TorchFunctionMode

import tnops
from electra import pretrain, trainer
from electra.masking import mask_tokens
from electra.modeling import ElectraTNForPretraining
from electra.tokenizer import load_tokenizer
from tnops.synonyms.vocab import load_vocab

ELECTRA = str(Path(trainer.__file__).parent)
TORCH = str(Path(torch.__file__).parent)
HOST_READS = {"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero", "argwhere",
              "masked_select", "unique", "repeat_interleave", "masked_scatter", "masked_scatter_"}


class HostReads(TorchFunctionMode):
    """Records ``(operation, file, line)`` of each host read or data-dependent shape while active."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        index = args[1] if name in ("__getitem__", "__setitem__") and len(args) > 1 else None
        indices = index if isinstance(index, tuple) else (index,)
        boolean_index = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
        if name in HOST_READS or boolean_index:
            caller = next(f for f in reversed(traceback.extract_stack()[:-1]) if not f.filename.startswith(TORCH))
            self.reads.append((f"{name}[bool]" if boolean_index else name, caller.filename, caller.lineno))
        return func(*args, **(kwargs or {}))

    def by_electra(self) -> list:
        return [(name, Path(file).name, line) for name, file, line in self.reads if file.startswith(ELECTRA)]


def test_the_spy_sees_host_reads_and_compactions():
    """The detector itself: each kind of read it must catch, attributed to this file (not electra's)."""
    x = torch.arange(6.0)
    with HostReads() as spy:
        x.sum().item(), float(x[0]), int(x[1]), bool(x[2] > 1), x.tolist(), x[x > 2], x.nonzero()
    assert [r[0] for r in spy.reads] == ["item", "__float__", "__int__", "__bool__", "tolist", "__getitem__[bool]",
                                         "nonzero"]
    assert spy.by_electra() == [] and all(r[1] == __file__ for r in spy.reads)


# ------------------------------------------------------------------------------------------------ model
def test_forward_statistics_are_device_tensors_and_forward_reads_nothing():
    model = ElectraTNForPretraining(tiny_config(sentence_sr_weight=0.5), synonym_table())
    ids, mask, types = batch()
    with HostReads() as spy:
        out = model(ids, mask, types, seed=5, sequence_offset=3)
        out.loss.backward()
    assert spy.by_electra() == [], spy.by_electra()
    assert set(out.stats) == {"masked", "corrected", "replaced_rate", "gen_accuracy", "disc_accuracy"}
    for name, value in out.stats.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, name
    assert out.stats["masked"].dtype == torch.int64 and out.stats["gen_accuracy"].is_floating_point()


def test_masked_positions_are_the_selected_ones_padded_to_max_predictions():
    ids, mask, _ = batch(b=6)
    mask[2, 5:] = 0  # a short sequence: 3 maskable tokens, so 0.15 · 3 rounds to 0 and the floor of 1 applies
    ids[3, 1:-1] = 100  # no maskable token at all ([UNK] is special): nothing selected, all padding
    out = mask_tokens(ids, mask, special_token_ids=[0, 100, 101, 102, 103], mask_token_id=103, seed=9,
                      max_predictions=5)
    assert out.positions.shape == out.valid.shape == (6, 5) and out.positions.dtype == torch.int64
    assert out.valid.sum(1).tolist() == out.selected.sum(1).tolist() and out.valid.sum(1)[2:4].tolist() == [1, 0]
    for row in range(6):
        count = int(out.valid[row].sum())
        assert out.valid[row].tolist() == [True] * count + [False] * (5 - count)  # a prefix
        assert out.positions[row, :count].tolist() == out.selected[row].nonzero().flatten().tolist()
        assert len(set(out.positions[row].tolist())) == 5  # distinct: a scatter back is well defined
        assert not out.selected[row, out.positions[row, count:]].any()
        assert out.positions[row, count:].tolist() == sorted(out.positions[row, count:].tolist())


def test_fixed_size_positions_sample_exactly_what_a_boolean_compaction_samples():
    """The generator head on [B, P] positions with ignored padding rows draws, row for row, the samples of the
    head on the compacted selected rows: same global row keys, same sampling stream."""
    from electra.seeds import derive_seed

    model = ElectraTNForPretraining(tiny_config(), synonym_table()).eval()
    ids, mask, types = batch(b=6)
    seed, offset = 13, 40
    out = model(ids, mask, types, seed=seed, sequence_offset=offset)
    cfg = model.config
    masked = mask_tokens(ids, mask, special_token_ids=cfg.special_token_ids, mask_token_id=cfg.mask_token_id, seed=seed,
                         sequence_offset=offset, max_predictions=cfg.max_predictions)
    with torch.no_grad():
        states = model.generator.electra(masked.input_ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        flat = torch.arange(ids.numel()).view_as(ids) + offset * ids.shape[1]
        reference = tnops.linear_mlm_loss(model.generator.generator_predictions(states[masked.selected]),
                                          model.word_embeddings, ids[masked.selected],
                                          bias=model.generator.generator_lm_head.bias, synonyms=model.synonyms,
                                          prediction="sample", seed=derive_seed("sampling", seed),
                                          sr_weight=cfg.sr_weight, row_ids=flat[masked.selected], reduction="sum")
    assert torch.equal(out.corrupted_ids, ids.masked_scatter(masked.selected, reference.predictions))
    kept = (~reference.corrected).sum()
    torch.testing.assert_close(out.gen_loss, reference.mlm_loss / kept, rtol=1e-5, atol=1e-6)
    assert int(out.stats["corrected"]) == int(reference.corrected.sum())


# ---------------------------------------------------------------------------------------------- trainer
PROSE = ("The quick brown fox jumps over the lazy dog. It was not amused by the fox at all. The dog went back to "
         "sleep. Nobody knows what happened to the fox afterwards. Python is a programming language that lets you "
         "work quickly. Many people use it for science, for the web and for teaching. Its documentation is long.")


def output_dir(argv) -> Path:
    return Path(argv[argv.index("--output-dir") + 1])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("host_sync")
    (root / "corpus.txt").write_text("\n\n".join([PROSE] * 12), encoding="utf-8")
    tokenizer = load_tokenizer()
    ids = tokenizer.convert_tokens_to_ids(["quick", "fast", "language", "tongue"])
    tnops.SynonymTable.from_pairs(ids[::2], ids[1::2], len(tokenizer), vocab_hash=load_vocab(tokenizer).hash) \
        .save(root / "synonyms.pt")  # hard correction on, with a small table

    def argv(out, *extra):
        return ["--preset", "tiny", "--max-seq-length", "32", "--batch-size", "4", "--grad-accum", "2",
                "--corpus", str(root / "corpus.txt"), "--cache-dir", str(root / "cache"), "--synonyms",
                str(root / "synonyms.pt"), "--output-dir", str(root / out), "--no-progress", "--eval-every", "1000",
                "--eval-batches", "1", *extra]

    return argv


def test_a_training_step_reads_nothing_until_it_logs(small_run):
    run = trainer.setup_run(pretrain.parse_args(small_run("steps", "--max-steps", "3", "--log-every", "3")))
    for _ in range(2):
        with HostReads() as spy:
            trainer.train_step(run)
        assert spy.by_electra() == [], spy.by_electra()
    assert run.history == [] and [p.step for p in run.pending] == [1, 2]
    with HostReads() as spy:
        trainer.log_steps(run)
    assert spy.by_electra(), "logging reads the numbers back (the spy must see it)"
    assert [r["step"] for r in run.history] == [1, 2] and run.pending == []
    assert all(r["masked"] > 0 and r["loss"] > 0 for r in run.history)


def test_log_every_changes_when_numbers_are_read_not_the_numbers(small_run):
    histories = []
    for every in ("1", "2"):
        argv = small_run(f"log{every}", "--max-steps", "3", "--log-every", every)
        pretrain.train(pretrain.parse_args(argv))
        records = json.loads((output_dir(argv) / "history.json").read_text())
        for record in records:  # wall-clock throughput is the one field that may differ between runs
            assert record.pop("tokens_per_second") > 0
        histories.append(records)
    assert histories[0] == histories[1] and len(histories[0]) == 3


def test_a_non_finite_step_is_never_applied_and_reported_at_the_next_log(small_run, capsys):
    # lr 1e30: step 1's update overflows the weights, so step 2 onward are non-finite; nothing is checkpointed
    # before step 3's log and the error names the first bad step.
    argv = small_run("nan", "--max-steps", "5", "--learning-rate", "1e30", "--warmup-steps", "0", "--log-every", "3")
    assert pretrain.main(argv) == 1
    err = capsys.readouterr().err
    assert "error: step 2: non-finite training loss" in err and "the run stopped at step 3 (--log-every)" in err, err
    out = output_dir(argv)
    assert not (out / "checkpoint.pt").exists() and not (out / "final").exists()


def test_the_progress_bar_shows_the_interval_correction_rate():
    """One step corrects 0 or 1 of ~100 masked tokens: the bar's corr= is the rate over the logged interval (one
    correction in 300 masked: 0.33 %), not the last step's (0.00 %)."""
    from types import SimpleNamespace

    class Bar:
        postfix = None

        def set_postfix(self, **kw):
            self.postfix = kw

    def values(corrected):
        row = dict(loss=1.0, gen_loss=0.5, disc_loss=0.5, sr_loss=0.0, corrected=corrected, masked=100.0,
                   tokens=512.0, grad_norm=1.0, finite=1.0)
        return torch.tensor([row[k] for k in trainer.STEP_VALUES])

    run = SimpleNamespace(pending=[trainer.PendingStep(s, values(c), 1e-4) for s, c in ((1, 1.0), (2, 0.0), (3, 0.0))],
                          history=[], args=SimpleNamespace(on_nonfinite="error"), skipped=0, progress=Bar(),
                          interval_started=0.0, restart_clock=lambda: None)
    trainer.log_steps(run)
    assert run.progress.postfix["corr"] == "0.33%"
    assert [r["corrected"] for r in run.history] == [1, 0, 0]
