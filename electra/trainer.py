"""The pre-training loop of ``electra-pretrain`` in its four parts: set up, step, log, save.

A step never reads the device from the host: the losses and counts of its micro-batches stay 0-d tensors on
the device, the non-finite guard is a device flag that the optimiser applies (:func:`electra.optim.step_where`),
and the values reach Python only in :func:`log_steps`, every ``--log-every`` steps and before each
evaluation or checkpoint.  So a non-finite step never updates the model; the run learns of it at the next
logging step (and stops there, or counts it under ``--on-nonfinite skip``).  Exceptions: fp16 (GradScaler
reads its overflow flag on the host) and an optimiser without a device-side skip.
"""
from __future__ import annotations

import errno
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from electra import fsdp, init_from
from electra.batches import Batch, BatchStream, eval_batches
from electra.config import ElectraTNConfig
from electra.dataset import PretrainingData, build_dataset
from electra.modeling import ElectraTNForPretraining
from electra.optim import make_optimizer, step_where, warmup_linear_decay
from electra.seeds import derive_seed
from electra.synonym_source import run_synonyms
from electra.tokenizer import load_tokenizer
from electra.training_io import atomic_save, load_checkpoint, plot_history, write_history
from tnops.io import prepare_output_directory, remove_stale_temporaries

# What one step leaves on the device, in this order (means over micro-batches for the four losses).
STEP_VALUES = ("loss", "gen_loss", "disc_loss", "sr_loss", "corrected", "masked", "tokens", "grad_norm", "finite")
EVAL_VALUES = ("loss", "gen_loss", "disc_loss", "sr_loss", "gen_accuracy", "disc_accuracy")


class NonFiniteLossError(RuntimeError):
    """A training step produced a NaN/inf loss or gradient (and ``--on-nonfinite error``, the default)."""


@dataclass
class PendingStep:
    """A finished step whose numbers are still on the device: ``values`` float ``[len(STEP_VALUES)]``."""

    step: int
    values: torch.Tensor
    lr: float


@dataclass
class TrainingRun:
    """Everything a run holds between steps."""

    args: object  # the parsed command line
    rank: int
    world: int
    device: torch.device
    output_dir: Path
    tokenizer: object
    config: ElectraTNConfig
    dataset: PretrainingData
    model: ElectraTNForPretraining
    runner: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: object
    stream: BatchStream
    scaler: torch.amp.GradScaler
    autocast: object
    micro_batch: int
    stop_at: int
    step: int = 0
    history: list = field(default_factory=list)
    skipped: int = 0
    pending: list = field(default_factory=list)
    progress: object = None
    interval_started: float = field(default_factory=time.perf_counter)

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / "checkpoint.pt"

    @property
    def ddp(self) -> bool:
        return self.runner is not self.model

    def restart_clock(self) -> None:
        """Start a new throughput interval (after logging, evaluating or saving: tok/s counts training only)."""
        self.interval_started = time.perf_counter()


# ------------------------------------------------------------------------------------------------ set up
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


def _config(args, tokenizer, sizes: dict | None = None) -> ElectraTNConfig:
    """The preset's recipe with the command line's overrides; ``sizes``: the model's sizes from ``--init-from``."""
    given = {"max_steps": args.max_steps, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
             "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps, "sr_weight": args.sr_weight,
             "dropout": args.dropout, "label_smoothing": getattr(args, "label_smoothing", None),
             "z_loss": getattr(args, "z_loss", None)}
    overrides = {**(sizes or {}), **{k: v for k, v in given.items() if v is not None}}
    config = ElectraTNConfig.from_preset(args.preset, hc=not args.no_hc, sentence_sr_weight=args.sentence_sr,
                                         **overrides).for_tokenizer(tokenizer)
    config.warmup_steps = min(config.warmup_steps, config.max_steps)
    return config


def _dataset(args, tokenizer, config, rank: int) -> PretrainingData:
    """Rank 0 builds (or finds) the cache once; the other ranks then load it."""
    def build(progress: bool) -> PretrainingData:
        return build_dataset(args.corpus, tokenizer, config.max_seq_length, args.cache_dir, args.seed,
                             progress=progress, pattern=getattr(args, "corpus_pattern", None))

    dataset = build(not args.no_progress) if rank == 0 else None
    if dist.is_initialized():
        dist.barrier()
    return dataset if rank == 0 else build(False)


def _precision(args, device: torch.device):
    """``(autocast context, GradScaler)``: autocast on CUDA only; a scaler only for fp16."""
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    if args.precision == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    autocast = torch.autocast(device.type, dtype=dtype) if device.type == "cuda" and dtype else nullcontext()
    return autocast, torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and dtype == torch.float16)


def setup_run(args) -> TrainingRun:
    """Build or load the data, the model, the optimiser and schedule; resume from a checkpoint if asked."""
    rank, world, device = _distributed()
    output_dir = Path(args.output_dir)
    if rank == 0:  # a regular file or a read-only folder fails here, before any data or model is built
        prepare_output_directory(output_dir, argument="--output-dir")
        remove_stale_temporaries(output_dir / "checkpoint.pt")  # left by a run killed mid-save
    pretrained = None
    if getattr(args, "init_from", None) or getattr(args, "generator_from", None):  # sizes, tokenizer: checkpoints
        torch.manual_seed(derive_seed("torch", args.seed, rank))  # a head the checkpoint lacks starts from the seed
        pretrained = init_from.load_pretrained(getattr(args, "init_from", None), getattr(args, "generator_from", None),
                                               args.tokenizer, args.dropout)
    tokenizer = pretrained.tokenizer if pretrained else load_tokenizer(args.tokenizer)
    config = _config(args, tokenizer, init_from.checkpoint_sizes(pretrained, args.preset) if pretrained else None)
    if pretrained:
        init_from.check_config(pretrained, config)
    if config.batch_size % (world * args.grad_accum):
        raise ValueError(f"--batch-size {config.batch_size} is not divisible by world_size × grad_accum = "
                         f"{world} × {args.grad_accum}")
    dataset = _dataset(args, tokenizer, config, rank)
    synonyms = run_synonyms(args, tokenizer, output_dir, rank)
    synonyms = synonyms.to(device) if synonyms is not None else None
    torch.manual_seed(derive_seed("torch", args.seed, rank))  # initialisation and dropout
    model = (init_from.build_model(pretrained, config, synonyms) if pretrained
             else ElectraTNForPretraining(config, synonyms)).to(device)
    if getattr(args, "fsdp", False):  # FSDP2 in place of DDP: shard before the optimiser sees the parameters
        fsdp.shard(model)
    optimizer = make_optimizer(model, args.optimizer, config.learning_rate, config.weight_decay, config.adam_epsilon)
    autocast, scaler = _precision(args, device)
    run = TrainingRun(args, rank, world, device, output_dir, tokenizer, config, dataset, model, model, optimizer,
                      warmup_linear_decay(optimizer, config.warmup_steps, config.max_steps),
                      BatchStream(dataset.train, config.batch_size, seed=args.seed, rank=rank, world_size=world),
                      scaler, autocast, config.batch_size // world // args.grad_accum,
                      min(config.max_steps, args.stop_after or config.max_steps))
    if args.resume:
        resume(run, run.checkpoint_path if args.resume == "auto" else Path(args.resume))
    if args.compile:
        model.generator.electra = torch.compile(model.generator.electra)
        model.discriminator.electra = torch.compile(model.discriminator.electra)
    if world > 1 and not fsdp.is_sharded(model):
        run.runner = torch.nn.parallel.DistributedDataParallel(model)
    if rank == 0 and not args.no_progress:
        from tqdm import tqdm

        run.progress = tqdm(total=config.max_steps, initial=run.step, desc="electra-pretrain", unit="step",
                            dynamic_ncols=True)
    model.train()
    return run


# -------------------------------------------------------------------------------------------------- step
def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cuda":  # pinned memory: the copy is queued instead of waiting for the GPU
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def _count_reducer(world: int):
    if world == 1:
        return None

    def reduce(counts: torch.Tensor) -> torch.Tensor:
        counts = counts.clone()
        dist.all_reduce(counts)
        return counts

    return reduce


def train_step(run: TrainingRun) -> None:
    """One optimiser step (all micro-batches), queued on the device without reading anything back; its
    numbers wait in ``run.pending`` for :func:`log_steps`."""
    args, accum, micro = run.args, run.args.grad_accum, run.micro_batch
    batch = _to_device(next(run.stream), run.device)
    seed = derive_seed("step", args.seed, run.step)  # masks and samples: the same on every rank and micro-batch
    reducer = _count_reducer(run.world)
    sums = torch.zeros(7, device=run.device)  # loss, gen, disc, sr, corrected, masked, tokens
    for m in range(accum):
        rows = slice(m * micro, (m + 1) * micro)
        sync = run.runner.no_sync() if run.ddp and m < accum - 1 else nullcontext()
        with sync, run.autocast:
            out = run.runner(batch.input_ids[rows], batch.attention_mask[rows], batch.token_type_ids[rows],
                             seed=seed, sequence_offset=batch.global_offset + m * micro, count_reducer=reducer)
            # counts are global: ×world undoes DDP's gradient averaging, ÷accum averages micro-batches
            run.scaler.scale(out.loss * run.world / accum).backward()
        sums += torch.stack([out.loss.detach(), out.gen_loss.detach(), out.disc_loss.detach(), out.sr_loss.detach(),
                             out.stats["corrected"], out.stats["masked"],
                             batch.attention_mask[rows].sum()]).float()
    run.scaler.unscale_(run.optimizer)
    grad_norm = fsdp.value(torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm))
    if run.world > 1:  # each rank's loss is its share (local sum / global count): the global loss is their sum
        dist.all_reduce(sums)  # before the update: every rank then takes the same non-finite decision
    finite = torch.isfinite(sums[:4]).all()
    if run.scaler.is_enabled():  # fp16: the scaler skips overflowing gradients itself, reading its flag on the host
        if bool(finite):
            run.scaler.step(run.optimizer)
    else:
        finite = finite & torch.isfinite(grad_norm)
        step_where(run.optimizer, finite)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1
    values = torch.cat([sums[:4] / accum, sums[4:], grad_norm.detach().float().reshape(1), finite.float().reshape(1)])
    run.pending.append(PendingStep(run.step, values, run.scheduler.get_last_lr()[0]))
    if run.progress is not None:
        run.progress.update(1)


# --------------------------------------------------------------------------------------------------- log
def log_steps(run: TrainingRun) -> None:
    """Read the pending steps' numbers (one transfer), append their history records, update the progress bar;
    NonFiniteLossError for a non-finite step under ``--on-nonfinite error``."""
    if not run.pending:
        return
    rows = torch.stack([p.values for p in run.pending]).tolist()
    elapsed = time.perf_counter() - run.interval_started
    for pending, row in zip(run.pending, rows):
        v = dict(zip(STEP_VALUES, row))
        finite = v["finite"] == 1.0
        if not finite and getattr(run.args, "on_nonfinite", "error") != "skip":
            run.pending.clear()
            raise NonFiniteLossError(_nonfinite_message(pending.step, run.step, v, run.checkpoint_path))
        run.skipped += not finite
        record = {"step": pending.step, "loss": v["loss"], "gen_loss": v["gen_loss"], "disc_loss": v["disc_loss"],
                  "sr_loss": v["sr_loss"], "correction_rate": v["corrected"] / max(v["masked"], 1.0),
                  "corrected": int(v["corrected"]), "masked": int(v["masked"]), "lr": pending.lr,
                  "nonfinite_skipped": run.skipped}
        if not finite:
            record["skipped"] = True
        run.history.append(record)
    tokens = sum(row[STEP_VALUES.index("tokens")] for row in rows)
    for record in run.history[-len(rows):]:  # throughput of the interval these steps ran in
        record["tokens_per_second"] = tokens / max(elapsed, 1e-9)
    run.pending.clear()
    if run.progress is not None:  # the correction rate over the interval's steps: one step's is mostly 0 or 1 token
        interval = run.history[-len(rows):]
        rate = sum(r["corrected"] for r in interval) / max(sum(r["masked"] for r in interval), 1)
        run.progress.set_postfix(loss=f"{run.history[-1]['loss']:.3f}", corr=f"{100 * rate:.2f}%",
                                 tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
    run.restart_clock()


def _nonfinite_message(bad_step: int, step: int, values: dict, checkpoint: Path) -> str:
    saved = (f"{checkpoint} (the last one written) holds finite weights" if checkpoint.exists()
             else "no checkpoint was written")
    stopped = "the run stopped there" if bad_step == step else f"the run stopped at step {step} (--log-every)"
    return (f"step {bad_step}: non-finite training loss (loss {values['loss']}, generator {values['gen_loss']}, "
            f"discriminator {values['disc_loss']}, SR {values['sr_loss']}, gradient norm {values['grad_norm']}); "
            f"its update was not applied and {stopped}, nothing was exported; {saved}. "
            "Lower --learning-rate, or pass --on-nonfinite skip to skip such steps and count them")


@torch.no_grad()
def evaluate(model: ElectraTNForPretraining, split, batch_size: int, max_batches: int, device, autocast,
             seed: int) -> dict:
    """Mean losses and accuracies over the first ``max_batches`` held-out batches (masks and samples from the
    ``evaluation`` stream of ``seed``, the same at every evaluation); ``{}`` when there is nothing to evaluate
    (``max_batches`` 0 or an empty held-out split)."""
    was_training = model.training
    model.eval()
    sums, n = torch.zeros(len(EVAL_VALUES), dtype=torch.float64, device=device), 0
    for i, batch in enumerate(eval_batches(split, batch_size)):
        if i >= max_batches:
            break
        batch = _to_device(batch, device)
        with autocast:
            out = model(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                        seed=derive_seed("evaluation", seed), sequence_offset=batch.global_offset)
        sums += torch.stack([out.loss, out.gen_loss, out.disc_loss, out.sr_loss, out.stats["gen_accuracy"],
                             out.stats["disc_accuracy"]]).double()
        n += 1
    model.train(was_training)
    return dict(zip(EVAL_VALUES, (sums / n).tolist())) if n else {}  # {} when nothing was evaluated


def evaluate_into_history(run: TrainingRun) -> None:
    """Evaluate on the held-out split and attach the result to the last history record (rank 0)."""
    evaluation = evaluate(run.model, run.dataset.eval, run.micro_batch, run.args.eval_batches, run.device,
                          run.autocast, run.args.seed)
    if evaluation:  # nothing to evaluate (--eval-batches 0, no held-out example): no entry
        run.history[-1]["eval"] = evaluation


# -------------------------------------------------------------------------------------------------- save
def save_checkpoint(run: TrainingRun) -> None:
    """Write model, optimiser, schedule, data position, history and every rank's RNG state (rank 0 writes)."""
    rng = [torch.get_rng_state()]
    if run.world > 1:  # every rank's dropout stream, so a resumed DDP run continues exactly
        gathered = [None] * run.world
        dist.all_gather_object(gathered, rng[0])
        rng = gathered
    cuda_rng = [torch.cuda.get_rng_state()] if torch.cuda.is_available() else []
    model_state, optimizer_state = fsdp.full_state(run.model, run.optimizer) if fsdp.is_sharded(run.model) \
        else (None, None)  # --fsdp: gathered on every rank (a collective), held by rank 0
    if run.rank == 0:
        state = {"model": model_state or run.model.state_dict(),
                 "optimizer": optimizer_state or run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "data": run.stream.state_dict(), "step": run.step,
                 "history": run.history, "rng": rng, "cuda_rng": cuda_rng, "scaler": run.scaler.state_dict(),
                 "config": run.config.to_dict()}  # tensors and plain values only
        atomic_save(state, run.checkpoint_path)


def resume(run: TrainingRun, path: Path) -> None:
    """Restore everything from a checkpoint (read with weights_only=True); ValueError naming it if it does not fit."""
    state = load_checkpoint(path)
    try:
        if fsdp.is_sharded(run.model):
            fsdp.load_full_state(run.model, run.optimizer, state["model"], state["optimizer"])
        else:
            run.model.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.stream.load_state_dict(state["data"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        torch.set_rng_state(rng[run.rank] if run.rank < len(rng) else rng[0])
        if torch.cuda.is_available() and state.get("cuda_rng"):
            torch.cuda.set_rng_state(state["cuda_rng"][min(run.rank, len(state["cuda_rng"]) - 1)])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        first = (str(error).splitlines() or [""])[0][:500]
        raise ValueError(f"--resume: {path} does not fit this run (another --preset, --init-from, tokenizer, "
                         f"corpus, --batch-size or --seed?): {type(error).__name__}: {first}") from None
    run.step, run.history = state["step"], state["history"]
    run.skipped = run.history[-1].get("nonfinite_skipped", 0) if run.history else 0


def finish_run(run: TrainingRun) -> dict:
    """After the last step: history.json, the check that no parameter went non-finite, the Hugging Face export
    and the loss-curve plot (rank 0, only when ``max_steps`` was reached).  Returns the run's summary."""
    config, output_dir = run.config, run.output_dir
    done = run.step >= config.max_steps
    summary = {"step": run.step, "finished": done, "checkpoint": str(run.checkpoint_path),
               "last": run.history[-1] if run.history else None, "history": run.history,
               "nonfinite_skipped": run.skipped}
    if run.rank == 0 and done:
        write_history(run.history, output_dir / "history.json")  # first: the cheapest record of the run
    broken = [name for name, p in run.model.named_parameters()
              if not bool(torch.isfinite(fsdp.value(p)).all())] if done else []
    if broken:  # the same on every rank (DDP keeps replicas equal): all stop
        raise NonFiniteLossError(f"parameters {', '.join(broken[:3])} hold NaN/inf values; nothing was exported")
    model = run.model
    if done and fsdp.is_sharded(model):  # every rank gathers; rank 0 exports (and reports from) a plain copy
        model = fsdp.plain_copy(model, lambda: ElectraTNForPretraining(config, run.model.synonyms))
        if model is not None:
            run.model = run.runner = model
    if run.rank == 0 and done:
        exported = _export(model, output_dir / "final", run.tokenizer)
        summary["export"] = {k: str(v) for k, v in exported.items()}
        summary["plot"] = str(plot_history(run.history, output_dir / "loss_curve.png"))
    if dist.is_initialized():
        dist.barrier()
    return summary


def _export(model: ElectraTNForPretraining, final: Path, tokenizer) -> dict:
    """``model.save_pretrained(final)``; a failed write (full disk, read-only folder) is an OSError naming ``final``
    (transformers and safetensors report it as OSError, RuntimeError or SafetensorError)."""
    from safetensors import SafetensorError

    from tnops.cli import error_line

    try:
        return model.save_pretrained(final, tokenizer)
    except (OSError, RuntimeError, SafetensorError) as error:
        raise OSError(getattr(error, "errno", None) or errno.EIO,
                      f"--output-dir: cannot export the model to {final}: {error_line(error)}") from None
