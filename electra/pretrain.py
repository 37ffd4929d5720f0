"""Pre-train ELECTRA with hard correction and soft regularization: ``electra-pretrain``.

Also ``python -m electra.pretrain``.

Single process, or data-parallel under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on GPU).
Every random choice is keyed by (seed, step, global sequence index), each stream derived from ``--seed`` by
:func:`electra.seeds.derive_seed`: a run on W ranks with gradient accumulation A sees exactly the masks and
samples of one process with the same global batch, and ``--resume`` continues bit-exactly (model, optimiser,
schedule, RNG and data position are checkpointed).  The loop itself is :mod:`electra.trainer`.
``--init-from`` continues pre-training a transformers ELECTRA checkpoint (:mod:`electra.init_from`), whose
held-out evaluation before the first step is history record 0; ``--generator-from minilm|DIR`` starts from a
pretrained generator (a BERT or ELECTRA checkpoint).

Checkpoints hold only tensors and plain values and are read with ``weights_only=True``: a crafted file
cannot run code. Every number on the command line is checked (finite, in range). A step whose loss or
gradient is NaN/inf is never applied (the decision is taken on the device, so steps do not wait for it); the
run stops at the next logging step, exporting nothing (``--on-nonfinite skip``: the step is skipped and
counted in the history as ``nonfinite_skipped``).
"""
from __future__ import annotations

import argparse
import math
import time

import torch.distributed as dist

from electra import fsdp
from electra.arguments import integer, number
from electra.config import PRESETS, ElectraTNConfig
from electra.fn_stats import print_examples
from electra.report import run_report
from electra.synonym_source import synonyms_source
from electra.trainer import (
    NonFiniteLossError,
    evaluate,
    evaluate_into_history,
    finish_run,
    log_steps,
    save_checkpoint,
    setup_run,
    train_step,
)
from tnops.cli import ToolArgumentParser, run_tool

__all__ = ["NonFiniteLossError", "main", "parse_args", "train"]

MAX_POSITIONS = ElectraTNConfig.max_position_embeddings  # the longest sequence the model embeds


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check the command line: every number must be finite and in range (argparse error naming the flag)."""
    p = ToolArgumentParser(prog="electra-pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size and recipe (default: tiny)")
    p.add_argument("--corpus", default=None, help="text file, directory, datasets name, or builtin:python-docs|wordnet")
    p.add_argument("--corpus-pattern", default=None, metavar="GLOB",
                   help="for a corpus directory: the files to read, e.g. '*.txt' (default *.txt and extension-less)")
    p.add_argument("--tokenizer", default=None, help="Hugging Face tokenizer dir/name (default: bert-base-uncased; "
                   "with --init-from, the tokenizer saved beside the weights)")
    p.add_argument("--synonyms", default=None, type=synonyms_source, metavar="FILE|wordnet|mythes:PATH",
                   help="a saved tnops.SynonymTable, or build one for the tokenizer from WordNet (English, the "
                        "default) or a MyThes thesaurus, e.g. mythes:/usr/share/mythes/th_da_DK.dat")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="continue pre-training a transformers ElectraForPreTraining checkpoint (e.g. "
                        "OUTPUT_DIR/final/discriminator): model sizes and tokenizer from it, recipe from --preset")
    p.add_argument("--generator-from", default=None, metavar="minilm|DIR",
                   help="a pretrained generator: 'minilm' (the packaged MiniLM-L6-H384, bert-base-uncased "
                        "vocabulary), a BERT checkpoint (BertModel/BertForMaskedLM/BertForPreTraining) or an "
                        "ElectraForMaskedLM (e.g. OUTPUT_DIR/final/generator); without --init-from the fresh "
                        "discriminator (--preset) shares its embeddings; default: a fresh generator")
    p.add_argument("--no-hc", action="store_true", help="disable hard correction")
    p.add_argument("--sr-weight", type=number(0.0), default=None,
                   help="soft-regularization weight (default 1.0; 0 disables)")
    p.add_argument("--label-smoothing", type=number(0.0, 1.0, high_open=True), default=None, metavar="EPS",
                   help="label smoothing of the generator's MLM cross-entropy, in [0, 1) (default 0)")
    p.add_argument("--z-loss", type=number(0.0), default=None, metavar="LAMBDA",
                   help="z-loss weight: adds LAMBDA·logsumexp² per kept generator row (default 0)")
    p.add_argument("--sentence-sr", type=number(0.0), nargs="?", const=1.0, default=0.0, metavar="WEIGHT",
                   help="add sentence-level SR with this weight (flag alone: 1.0)")
    p.add_argument("--max-steps", type=integer(1), default=None)
    p.add_argument("--batch-size", type=integer(1), default=None,
                   help="global batch size (all ranks, all micro-batches)")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and optimiser state with FSDP2 (fully_shard, one unit per "
                        "encoder layer) instead of replicating them with DDP; launch with torchrun")
    p.add_argument("--grad-accum", type=integer(1), default=1, help="micro-batches per step on each rank")
    p.add_argument("--max-seq-length", type=integer(8, MAX_POSITIONS), default=None)
    p.add_argument("--learning-rate", type=number(0.0, low_open=True), default=None)
    p.add_argument("--warmup-steps", type=integer(0), default=None)
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw"],
                   help="adam: no bias correction, as ELECTRA; adamw: torch.optim.AdamW")
    p.add_argument("--dropout", type=number(0.0, 1.0, high_open=True), default=None)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype on GPU (auto: bf16 when supported); CPU runs fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the two encoders")
    p.add_argument("--on-nonfinite", default="error", choices=["error", "skip"],
                   help="a step whose loss or gradient is NaN/inf: stop with an error, exporting nothing (default), "
                        "or skip its update and count it (history: nonfinite_skipped)")
    p.add_argument("--output-dir", default="runs/electra")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from a checkpoint file, or (flag alone) from OUTPUT_DIR/checkpoint.pt "
                        "(repeat the run's --init-from/--generator-from)")
    p.add_argument("--save-every", type=integer(1), default=100, help="checkpoint every N steps (and at the end)")
    p.add_argument("--log-every", type=integer(1), default=10,
                   help="read the step statistics back from the device every N steps (and before each evaluation "
                        "and checkpoint): history records and the progress bar's numbers")
    p.add_argument("--eval-every", type=integer(1), default=100, help="evaluate on the held-out split every N steps")
    p.add_argument("--eval-batches", type=integer(0), default=8, help="held-out batches per evaluation (0: none)")
    p.add_argument("--stop-after", type=integer(1), default=None,
                   help="checkpoint and stop at this step without finishing (simulates pre-emption)")
    p.add_argument("--cache-dir", default=None, help="tokenized-data cache (default ~/.cache/tnops/electra_data)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    return args


def train(args) -> dict:
    """Run pre-training as ``args`` says; returns a summary (final step, last losses, paths and, for a finished
    run, ``report``: what :func:`electra.report.run_report` wrote to ``summary.json``)."""
    started = time.perf_counter()
    run = setup_run(args)
    max_steps = run.config.max_steps
    if getattr(args, "init_from", None) and run.step == 0 and (run.rank == 0 or fsdp.is_sharded(run.model)):
        evaluate_checkpoint(run)
    try:
        while run.step < run.stop_at:
            train_step(run)
            step = run.step
            save = step % args.save_every == 0 or step == run.stop_at
            evaluation = step % args.eval_every == 0 or step == max_steps
            if save or evaluation or step % args.log_every == 0:  # the same steps on every rank
                log_steps(run)
            if evaluation and (run.rank == 0 or fsdp.is_sharded(run.model)):  # FSDP2: every rank runs forwards
                evaluate_into_history(run)
            if save:
                save_checkpoint(run)
            if evaluation or save:
                run.restart_clock()
    finally:
        if run.progress is not None:
            run.progress.close()
    summary = finish_run(run)
    if "export" in summary:  # rank 0 of a finished run: Table-2 ratios and Figure-3 examples, summary.json
        summary["report"] = run_report(run, started)
        summary["report_path"] = str(run.output_dir / "summary.json")
    return summary


def evaluate_checkpoint(run) -> None:
    """Step 0 of a continued run: the held-out evaluation of the loaded weights (the same batches, masks and
    samples as every later evaluation), recorded as ``{"step": 0, "init_from": DIR, "eval": {...}}``."""
    evaluation = evaluate(run.model, run.dataset.eval, run.micro_batch, run.args.eval_batches, run.device,
                          run.autocast, run.args.seed)
    if evaluation:
        run.history.append({"step": 0, "init_from": str(run.args.init_from), "eval": evaluation})


def main(argv=None) -> int:
    """Run the command: 0 on success, 1 for a non-finite loss, 2 for bad arguments, inputs, checkpoints or output
    folders (a read-only or full disk included); every failure is one line on stderr."""
    args = parse_args(argv)
    try:
        return run_tool("electra-pretrain", lambda: _run(args), errors=(NonFiniteLossError,),
                        status_of=lambda error: 1 if isinstance(error, NonFiniteLossError) else 2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(args) -> int:
    summary = train(args)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        last = {key: math.nan if value is None else value for key, value in (summary["last"] or {}).items()}
        # the correction rates are those of the run and its last window below: one step's is mostly 0 or 1 token
        print(f"step {summary['step']}: loss {last.get('loss', math.nan):.4f}")
        history = summary.get("history") or []
        corrected, masked = sum(r.get("corrected", 0) for r in history), sum(r.get("masked", 0) for r in history)
        if masked:
            print(f"hard correction over the run: {corrected} of {masked} masked predictions were listed synonyms "
                  f"of their gold token and dropped ({100 * corrected / masked:.3f} %)")
        report = summary.get("report")
        if report:
            print(f"hard correction over the last {report['last_window_steps']} steps: "
                  f"{100 * report['correction_rate_last_window']:.3f} % of masked predictions")
            if report["fn_prediction_ratio"] is not None:
                print(f"held-out false negatives (Table 2): {report['fn_prediction_ratio']:.2%} of wrong predictions "
                      f"are listed synonyms; {report['fn_iteration_ratio']:.2%} of sequences have one")
            print_examples(report["examples"])
        if summary["nonfinite_skipped"]:
            print(f"skipped {summary['nonfinite_skipped']} step(s) whose loss or gradient was NaN/inf "
                  "(--on-nonfinite skip; history.json marks them)")
        print(f"checkpoint: {summary['checkpoint']}")
        if "export" in summary:
            print(f"discriminator (AutoModelForPreTraining): {summary['export']['discriminator']}")
            print(f"generator (AutoModelForMaskedLM):        {summary['export']['generator']}")
            print(f"loss curve: {summary['plot']}")
        if report:
            print(f"summary: {summary['report_path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
