"""Pre-train ELECTRA with hard correction and soft regularization: ``electra-pretrain``.

Also ``python -m electra.pretrain``.

Single process, or data-parallel under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on GPU).
Every random choice is keyed by (seed, step, global sequence index): a run on W ranks with gradient
accumulation A sees exactly the masks and samples of one process with the same global batch, and
``--resume`` continues bit-exactly (model, optimiser, schedule, RNG and data position are checkpointed).

Checkpoints hold only tensors and plain values and are read with ``weights_only=True``: a crafted file
cannot run code. Every number on the command line is checked (finite, in range). A step whose loss or
gradient is NaN/inf stops the run before its update, exporting nothing (``--on-nonfinite skip``: the
update is skipped and counted in the history as ``nonfinite_skipped``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

import tnops
from electra import data as edata
from electra.arguments import integer, number
from electra.config import PRESETS, ElectraTNConfig
from electra.modeling import ElectraTNForPretraining
from electra.optim import make_optimizer, warmup_linear_decay
from electra.training_io import atomic_save, load_checkpoint, plot_history, write_history
from tnops.io import remove_stale_temporaries

EVAL_SEED = 0x5EED_E7A1
MAX_POSITIONS = ElectraTNConfig.max_position_embeddings  # the longest sequence the model embeds


class NonFiniteLossError(RuntimeError):
    """A training step produced a NaN/inf loss or gradient (and ``--on-nonfinite error``, the default)."""


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check the command line: every number must be finite and in range (argparse error naming the flag)."""
    p = argparse.ArgumentParser(prog="electra-pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size and recipe (default: tiny)")
    p.add_argument("--corpus", default=None, help="text file, directory, datasets name, or builtin:python-docs|wordnet")
    p.add_argument("--corpus-pattern", default=None, metavar="GLOB",
                   help="for a corpus directory: the files to read, e.g. '*.txt' (default *.txt and extension-less)")
    p.add_argument("--tokenizer", default=None, help="Hugging Face tokenizer dir/name (default: bert-base-uncased)")
    p.add_argument("--synonyms", default=None, help="saved tnops.SynonymTable (default: built from WordNet)")
    p.add_argument("--no-hc", action="store_true", help="disable hard correction")
    p.add_argument("--sr-weight", type=number(0.0), default=None,
                   help="soft-regularization weight (default 1.0; 0 disables)")
    p.add_argument("--sentence-sr", type=number(0.0), nargs="?", const=1.0, default=0.0, metavar="WEIGHT",
                   help="add sentence-level SR with this weight (flag alone: 1.0)")
    p.add_argument("--max-steps", type=integer(1), default=None)
    p.add_argument("--batch-size", type=integer(1), default=None,
                   help="global batch size (all ranks, all micro-batches)")
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
                   help="continue from a checkpoint file, or (flag alone) from OUTPUT_DIR/checkpoint.pt")
    p.add_argument("--save-every", type=integer(1), default=100, help="checkpoint every N steps (and at the end)")
    p.add_argument("--eval-every", type=integer(1), default=100, help="evaluate on the held-out split every N steps")
    p.add_argument("--eval-batches", type=integer(0), default=8, help="held-out batches per evaluation (0: none)")
    p.add_argument("--stop-after", type=integer(1), default=None,
                   help="checkpoint and stop at this step without finishing (simulates pre-emption)")
    p.add_argument("--cache-dir", default=None, help="tokenized-data cache (default ~/.cache/tnops/electra_data)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _config(args, tokenizer) -> ElectraTNConfig:
    given = {"max_steps": args.max_steps, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
             "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps, "sr_weight": args.sr_weight,
             "dropout": args.dropout}
    overrides = {k: v for k, v in given.items() if v is not None}
    config = ElectraTNConfig.from_preset(args.preset, hc=not args.no_hc, sentence_sr_weight=args.sentence_sr,
                                         **overrides).for_tokenizer(tokenizer)
    config.warmup_steps = min(config.warmup_steps, config.max_steps)
    return config


def _synonyms(args, tokenizer, output_dir: Path, rank: int):
    if args.no_hc:
        return None
    if args.synonyms:
        return tnops.SynonymTable.load(args.synonyms, vocab=tokenizer)
    path = output_dir / "synonyms.pt"
    if rank == 0 and not path.exists():
        tnops.SynonymTable.from_wordnet(tokenizer, progress=not args.no_progress).save(path)
    if dist.is_initialized():
        dist.barrier()
    return tnops.SynonymTable.load(path, vocab=tokenizer)


def step_seed(seed: int, step: int) -> int:
    """The masking/sampling seed of one optimiser step (the same on every rank and micro-batch)."""
    return (seed * 1_000_003 + step * 7_919 + 1) & ((1 << 62) - 1)


def _count_reducer(world: int):
    if world == 1:
        return None

    def reduce(counts: torch.Tensor) -> torch.Tensor:
        counts = counts.clone()
        dist.all_reduce(counts)
        return counts

    return reduce


@torch.no_grad()
def evaluate(model: ElectraTNForPretraining, split, batch_size: int, max_batches: int, device, autocast) -> dict:
    """Mean losses and accuracies over the first ``max_batches`` held-out batches (fixed masks and samples);
    ``{}`` when there is nothing to evaluate (``max_batches`` 0 or an empty held-out split)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for i, batch in enumerate(edata.eval_batches(split, batch_size)):
        if i >= max_batches:
            break
        batch = batch.to(device)
        with autocast:
            out = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, seed=EVAL_SEED,
                        sequence_offset=batch.global_offset)
        values = {"loss": out.loss.item(), "gen_loss": out.gen_loss.item(), "disc_loss": out.disc_loss.item(),
                  "sr_loss": out.sr_loss.item(), "gen_accuracy": out.stats["gen_accuracy"],
                  "disc_accuracy": out.stats["disc_accuracy"]}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    model.train(was_training)
    return {k: v / n for k, v in sums.items()}  # {} when nothing was evaluated


def train(args) -> dict:
    """Run pre-training as ``args`` says; returns a summary (final step, last losses, paths)."""
    rank, world, device = _distributed()
    output_dir = Path(args.output_dir)
    checkpoint_path = output_dir / "checkpoint.pt"
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(checkpoint_path)  # left by a run killed mid-save
    tokenizer = edata.load_tokenizer(args.tokenizer)
    config = _config(args, tokenizer)
    if config.batch_size % (world * args.grad_accum):
        raise ValueError(f"--batch-size {config.batch_size} is not divisible by world_size × grad_accum = "
                         f"{world} × {args.grad_accum}")
    pattern = getattr(args, "corpus_pattern", None)
    if rank == 0:  # build (or find) the cache once; the other ranks then load it
        dataset = edata.build_dataset(args.corpus, tokenizer, config.max_seq_length, args.cache_dir, args.seed,
                                      progress=not args.no_progress, pattern=pattern)
    if dist.is_initialized():
        dist.barrier()
    if rank != 0:
        dataset = edata.build_dataset(args.corpus, tokenizer, config.max_seq_length, args.cache_dir, args.seed,
                                      progress=False, pattern=pattern)
    synonyms = _synonyms(args, tokenizer, output_dir, rank)
    torch.manual_seed(args.seed + rank)  # dropout; masks and samples are keyed separately
    model = ElectraTNForPretraining(config, synonyms.to(device) if synonyms is not None else None).to(device)
    optimizer = make_optimizer(model, args.optimizer, config.learning_rate, config.weight_decay, config.adam_epsilon)
    scheduler = warmup_linear_decay(optimizer, config.warmup_steps, config.max_steps)
    stream = edata.BatchStream(dataset.train, config.batch_size, seed=args.seed, rank=rank, world_size=world)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    if args.precision == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    autocast = torch.autocast(device.type, dtype=dtype) if device.type == "cuda" and dtype else nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and dtype == torch.float16)
    step, history = 0, []
    if args.resume:
        path = checkpoint_path if args.resume == "auto" else Path(args.resume)
        step, history = _resume(path, rank, model, optimizer, scheduler, stream, scaler)
    on_nonfinite = getattr(args, "on_nonfinite", "error")
    skipped = history[-1].get("nonfinite_skipped", 0) if history else 0
    if args.compile:
        model.generator.electra = torch.compile(model.generator.electra)
        model.discriminator.electra = torch.compile(model.discriminator.electra)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    runner = ddp or model
    reducer = _count_reducer(world)
    micro = config.batch_size // world // args.grad_accum
    stop_at = min(config.max_steps, args.stop_after or config.max_steps)
    progress = None
    if rank == 0 and not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=config.max_steps, initial=step, desc="electra-pretrain", unit="step", dynamic_ncols=True)
    model.train()
    while step < stop_at:
        started = time.perf_counter()
        batch = next(stream).to(device)
        seed = step_seed(args.seed, step)
        totals = torch.zeros(6, device=device)  # loss, gen, disc, sr, corrected, masked
        for m in range(args.grad_accum):
            rows = slice(m * micro, (m + 1) * micro)
            sync = ddp.no_sync() if ddp is not None and m < args.grad_accum - 1 else nullcontext()
            with sync, autocast:
                out = runner(batch.input_ids[rows], batch.attention_mask[rows], batch.token_type_ids[rows], seed=seed,
                             sequence_offset=batch.global_offset + m * micro, count_reducer=reducer)
                # counts are global: ×world undoes DDP's gradient averaging, ÷accum averages micro-batches
                scaler.scale(out.loss * world / args.grad_accum).backward()
            totals += torch.stack([out.loss.detach(), out.gen_loss.detach(), out.disc_loss.detach(),
                                   out.sr_loss.detach(), torch.tensor(float(out.stats["corrected"]), device=device),
                                   torch.tensor(float(out.stats["masked"]), device=device)])
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        if world > 1:  # each rank's loss is its share (local sum / global count): the global loss is their sum
            dist.all_reduce(totals)  # before the update: every rank then takes the same non-finite decision
        # fp16: the scaler itself skips steps whose gradients overflowed; the loss must still be finite
        finite = bool(torch.isfinite(totals[:4]).all()) and (scaler.is_enabled() or bool(torch.isfinite(grad_norm)))
        if finite:
            scaler.step(optimizer)
        elif on_nonfinite == "skip":
            skipped += 1
        else:
            if progress is not None:
                progress.close()
            raise NonFiniteLossError(_nonfinite_message(step + 1, totals / args.grad_accum, grad_norm, checkpoint_path))
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        tokens = float(batch.attention_mask.sum()) * world
        means = (totals[:4] / args.grad_accum).tolist()
        record = {"step": step, "loss": means[0], "gen_loss": means[1], "disc_loss": means[2], "sr_loss": means[3],
                  "correction_rate": totals[4].item() / max(totals[5].item(), 1.0), "corrected": int(totals[4].item()),
                  "masked": int(totals[5].item()), "lr": scheduler.get_last_lr()[0], "nonfinite_skipped": skipped}
        if not finite:
            record["skipped"] = True
        elapsed = time.perf_counter() - started
        if rank == 0 and (step % args.eval_every == 0 or step == config.max_steps):
            evaluation = evaluate(model, dataset.eval, micro, args.eval_batches, device, autocast)
            if evaluation:  # nothing to evaluate (--eval-batches 0, no held-out example): no entry
                record["eval"] = evaluation
        history.append(record)
        if progress is not None:
            progress.set_postfix(loss=f"{record['loss']:.3f}", corr=f"{100 * record['correction_rate']:.2f}%",
                                 tok_s=f"{tokens / elapsed:.0f}")
            progress.update(1)
        if step % args.save_every == 0 or step == stop_at:
            _save_checkpoint(checkpoint_path, model, optimizer, scheduler, stream, step, history, config, world, rank,
                             scaler)
    if progress is not None:
        progress.close()
    summary = {"step": step, "finished": step >= config.max_steps, "checkpoint": str(checkpoint_path),
               "last": history[-1] if history else None, "history": history, "nonfinite_skipped": skipped}
    if rank == 0 and step >= config.max_steps:
        write_history(history, output_dir / "history.json")  # first: the cheapest record of the run
    broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())] \
        if step >= config.max_steps else []
    if broken:  # the same on every rank (DDP keeps replicas equal): all stop
        raise NonFiniteLossError(f"parameters {', '.join(broken[:3])} hold NaN/inf values; nothing was exported")
    if rank == 0 and step >= config.max_steps:
        summary["export"] = {k: str(v) for k, v in model.save_pretrained(output_dir / "final", tokenizer).items()}
        summary["plot"] = str(plot_history(history, output_dir / "loss_curve.png"))
    if dist.is_initialized():
        dist.barrier()
    return summary


def _resume(path: Path, rank: int, model, optimizer, scheduler, stream, scaler) -> tuple[int, list]:
    """Restore everything from a checkpoint (read with weights_only=True); ValueError naming it if it does not fit."""
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.load_state_dict(state["data"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        torch.set_rng_state(rng[rank] if rank < len(rng) else rng[0])
        if torch.cuda.is_available() and state.get("cuda_rng"):
            torch.cuda.set_rng_state(state["cuda_rng"][min(rank, len(state["cuda_rng"]) - 1)])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        first = (str(error).splitlines() or [""])[0][:500]
        raise ValueError(f"--resume: {path} does not fit this run (another --preset, tokenizer, corpus, "
                         f"--batch-size or --seed?): {type(error).__name__}: {first}") from None
    return state["step"], state["history"]


def _nonfinite_message(step: int, means: torch.Tensor, grad_norm: torch.Tensor, checkpoint: Path) -> str:
    loss, gen, disc, sr = (float(v) for v in means[:4])
    saved = (f"{checkpoint} (the last one written) holds finite weights" if checkpoint.exists()
             else "no checkpoint was written")
    return (f"step {step}: non-finite training loss (loss {loss}, generator {gen}, discriminator {disc}, SR {sr}, "
            f"gradient norm {float(grad_norm)}); stopped before the update, nothing was exported; {saved}. "
            "Lower --learning-rate, or pass --on-nonfinite skip to skip such steps and count them")


def _save_checkpoint(path, model, optimizer, scheduler, stream, step, history, config, world, rank, scaler):
    rng = [torch.get_rng_state()]
    if world > 1:  # every rank's dropout stream, so a resumed DDP run continues exactly
        gathered = [None] * world
        dist.all_gather_object(gathered, rng[0])
        rng = gathered
    cuda_rng = [torch.cuda.get_rng_state()] if torch.cuda.is_available() else []
    if rank == 0:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "data": stream.state_dict(), "step": step, "history": history, "rng": rng, "cuda_rng": cuda_rng,
                 "scaler": scaler.state_dict(), "config": config.to_dict()}  # tensors and plain values only
        atomic_save(state, path)


def main(argv=None) -> int:
    """Run the command: 0 on success, 1 for a non-finite loss, 2 for bad arguments, inputs or checkpoints."""
    args = parse_args(argv)
    try:
        summary = train(args)
    except (NonFiniteLossError, ValueError, FileNotFoundError) as error:
        print(f"electra-pretrain: error: {error}", file=sys.stderr)
        if dist.is_initialized():
            dist.destroy_process_group()
        return 1 if isinstance(error, NonFiniteLossError) else 2
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        last = summary["last"] or {}
        print(f"step {summary['step']}: loss {last.get('loss', math.nan):.4f}, "
              f"correction rate {100 * last.get('correction_rate', math.nan):.2f} %")
        history = summary.get("history") or []
        corrected, masked = sum(r.get("corrected", 0) for r in history), sum(r.get("masked", 0) for r in history)
        if masked:
            print(f"hard correction over the run: {corrected} of {masked} masked predictions were listed synonyms "
                  f"of their gold token and dropped ({100 * corrected / masked:.3f} %)")
        if summary["nonfinite_skipped"]:
            print(f"skipped {summary['nonfinite_skipped']} step(s) whose loss or gradient was NaN/inf "
                  "(--on-nonfinite skip; history.json marks them)")
        print(f"checkpoint: {summary['checkpoint']}")
        if "export" in summary:
            print(f"discriminator (AutoModelForPreTraining): {summary['export']['discriminator']}")
            print(f"generator (AutoModelForMaskedLM):        {summary['export']['generator']}")
            print(f"loss curve: {summary['plot']}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
