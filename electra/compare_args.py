"""The command line of ``electra-compare`` (:mod:`electra.compare`): its own flags, the variants' electra-pretrain
flags, and what a run's settings are."""
from __future__ import annotations

import argparse
import contextlib
import io
import sys

from electra import pretrain
from electra.arguments import integer, number
from tnops.cli import ToolArgumentParser

__all__ = ["COSMETIC", "HC_VARIANTS", "RESERVED", "VARIANTS", "parse_args", "run_settings", "variant_flags"]

DESCRIPTION = "Baseline, hard correction and soft regularization pre-trained side by side: ``electra-compare``."

VARIANTS = {
    "baseline": ("--no-hc", "--sr-weight", "0"),
    "hc": ("--sr-weight", "0"),
    "sr": ("--no-hc",),
    "hc+sr": (),
    "sentence-sr": ("--no-hc", "--sr-weight", "0", "--sentence-sr", "1"),
    "embedding-hc": ("--sr-weight", "0"),  # and --synonyms: the embedding-neighbour table
}
HC_VARIANTS = ("hc", "hc+sr")  # the variants trained with the shared table
# electra-pretrain settings the variants set themselves: (namespace key, its default, why it is refused)
RESERVED = (("seed", 0, "--seed: give --seeds"), ("no_hc", False, "--no-hc: the variants set it"),
            ("sr_weight", None, "--sr-weight: the variants set it"),
            ("sentence_sr", 0.0, "--sentence-sr: the sentence-sr variant sets it"),
            ("resume", None, "--resume: unfinished runs resume by themselves"),
            ("stop_after", None, "--stop-after: a comparison needs finished runs"))
# Settings that do not change what a run learns: a change in them does not retrain it.
COSMETIC = ("output_dir", "resume", "no_progress", "cache_dir", "save_every", "log_every", "stop_after")


def _variant_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant {', '.join(map(repr, unknown)) or repr(text)}; "
                                         f"known: {', '.join(VARIANTS)}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a variant is named twice in {text!r}")
    return names


def _seed_list(text: str) -> list[int]:
    seeds = []
    for field in text.split(","):
        try:
            seeds.append(int(field))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, e.g. 1,2,3, got {text!r}"
                                             ) from None
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers >= 0, got {text!r}")
    return seeds


def parse_args(argv=None) -> argparse.Namespace:
    """The command line: electra-compare's own flags, the rest checked by electra-pretrain's parser.

    Returns a namespace whose ``pretrain`` is electra-pretrain's namespace and ``pretrain_argv`` the flags passed on.
    Errors (unknown variant, bad ``--seeds``, a bad or reserved electra-pretrain flag) print one line and exit 2.
    """
    p = ToolArgumentParser(prog="electra-compare", description=DESCRIPTION, allow_abbrev=False,
                           epilog="Any other flag (--preset, --max-steps, --corpus, --batch-size, --generator-from, "
                                  "--no-progress, ...) is passed to electra-pretrain.")
    p.add_argument("--variants", type=_variant_list, default=["baseline", "hc", "sr", "hc+sr"],
                   help=f"comma-separated, from {', '.join(VARIANTS)} (default baseline,hc,sr,hc+sr)")
    p.add_argument("--seeds", type=_seed_list, default=[0], help="comma-separated seeds, e.g. 1,2,3 (default 0)")
    p.add_argument("--output-dir", default="runs/compare")
    p.add_argument("--eval-max-batches", type=integer(1), default=None,
                   help="held-out batches of the final evaluation (default: --eval-batches, or 8 when that is 0)")
    p.add_argument("--embedding-vectors", default=None, metavar="PATH",
                   help="embedding-hc: GloVe/word2vec text vectors (default: the pretrained embeddings of "
                        "--init-from/--generator-from)")
    p.add_argument("--embedding-k", type=integer(1), default=10, help="embedding-hc: neighbours per word")
    p.add_argument("--embedding-threshold", type=number(-1.0, 1.0), default=None,
                   help="embedding-hc: minimum cosine of a neighbour")
    p.add_argument("--finetune", default=None, metavar="TASK", help="also fine-tune each run's discriminator")
    p.add_argument("--data-dir", default=None, help="--finetune: the task's GLUE TSV files")
    p.add_argument("--finetune-steps", type=integer(1), default=None, help="--finetune: steps (default: epochs)")
    p.add_argument("--finetune-epochs", type=number(0.0, low_open=True), default=3.0)
    p.add_argument("--finetune-batch-size", type=integer(1), default=32)
    p.add_argument("--finetune-learning-rate", type=number(0.0, low_open=True), default=1e-4)
    p.add_argument("--finetune-max-train-samples", type=integer(1), default=None)
    p.add_argument("--finetune-max-eval-samples", type=integer(1), default=None)
    args, rest = p.parse_known_args(argv)
    args.pretrain_argv = rest
    args.pretrain = _pretrain_namespace(rest)
    for key, default, why in RESERVED:
        if getattr(args.pretrain, key) != default:
            p.error(f"{why} (electra-compare runs electra-pretrain with it)")
    if args.finetune is not None:
        from electra.finetune import TASKS

        if args.finetune not in TASKS:
            p.error(f"argument --finetune: unknown task {args.finetune!r}; known: {', '.join(TASKS)}")
    if "embedding-hc" in args.variants and not (args.embedding_vectors or args.pretrain.init_from
                                                or args.pretrain.generator_from):
        p.error("variant embedding-hc: no word vectors to take neighbours from: pass --embedding-vectors PATH "
                "(GloVe/word2vec text; none is installed offline here) or --generator-from/--init-from (their "
                "pretrained word embeddings); a fresh model's embeddings are random")
    return args


def _pretrain_namespace(argv: list[str]) -> argparse.Namespace:
    """electra-pretrain's parse of ``argv``; its one-line error is repeated as electra-compare's (exit 2)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return pretrain.parse_args(argv)
    except SystemExit as stop:
        line = (captured.getvalue().strip().splitlines() or [f"bad electra-pretrain flags {argv}"])[-1]
        line = line.removeprefix("electra-pretrain: error: ")
        print(f"electra-compare: error: electra-pretrain flag: {line}", file=sys.stderr)
        raise SystemExit(stop.code or 2) from None


def variant_flags(variant: str, embedding_table=None, table=None) -> list[str]:
    """electra-pretrain flags of ``variant`` (ValueError naming the known ones for another name).

    Args:
        embedding_table: embedding-hc's table file (required for that variant).
        table: the shared table file of the HC variants (None: electra-pretrain's default, WordNet).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown {variant!r}; known: {', '.join(VARIANTS)}")
    flags = list(VARIANTS[variant])
    if variant == "embedding-hc":
        if embedding_table is None:
            raise ValueError("variant embedding-hc: needs its embedding-neighbour table (embedding_table)")
        flags += ["--synonyms", str(embedding_table)]
    elif variant in HC_VARIANTS and table is not None:
        flags += ["--synonyms", str(table)]
    return flags


def run_settings(namespace: argparse.Namespace) -> dict:
    """What a run learns from: electra-pretrain's parsed settings without the cosmetic ones (JSON-ready)."""
    return {k: v for k, v in sorted(vars(namespace).items()) if k not in COSMETIC}
