"""False-negative statistics of a trained generator (paper Table 2): ``electra-fn-stats``.

Masks held-out text as pre-training does, lets the generator predict (Gumbel sample, or argmax), and
counts how many wrong predictions are listed synonyms of the gold token:

* prediction level: corrected / mismatched predictions;
* iteration level: sequences with at least one corrected prediction / sequences.

``--examples N`` also prints N corrected predictions in the paper's Figure-3 style (:mod:`electra.showcase`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

import tnops
from electra.arguments import integer
from electra.batches import eval_batches
from electra.dataset import build_dataset
from electra.eval_batch import masked_head
from electra.init_from import load_generator
from electra.masking import IGNORE_INDEX
from electra.seeds import derive_seed
from electra.showcase import CorrectionExample, collect_examples, format_example
from electra.tokenizer import load_tokenizer
from tnops.cli import ToolArgumentParser, run_tool


def _generator_dir(model: Path) -> Path:
    """``--model``: electra-pretrain's ``final/`` (its ``generator/`` is read) or a generator directory itself."""
    if not model.is_dir():
        what = "not a directory" if model.exists() else "no such directory"
        raise FileNotFoundError(f"--model: {what}: {str(model)!r}; expected electra-pretrain's OUTPUT_DIR/final or "
                                "its final/generator")
    if (model / "generator").is_dir():
        return model / "generator"
    if not (model / "config.json").is_file():
        held = " (only discriminator/, which has no MLM head)" if (model / "discriminator").is_dir() else ""
        raise ValueError(f"--model: {model} holds no generator{held}: expected {model / 'generator'} or a generator "
                         "directory (an ElectraForMaskedLM with config.json and weights)")
    return model


def _synonyms(path, model: Path, tokenizer):
    for candidate in ([Path(path)] if path else []) + [model / "synonyms.pt", model.parent / "synonyms.pt"]:
        if candidate.exists():
            return tnops.SynonymTable.load(candidate, vocab=tokenizer)
    return tnops.SynonymTable.from_wordnet(tokenizer, progress=False)


@torch.no_grad()
def false_negative_stats(generator, tokenizer, synonyms, split, *, batch_size: int = 32, max_batches: int | None = None,
                         prediction: str = "sample", seed: int = 0, max_predictions: int | None = None,
                         examples: int = 0) -> dict:
    """Count corrected predictions of ``generator`` (an ``ElectraForMaskedLM``) on ``split``.

    Args:
        split: a ``PretrainingSplit`` (``input_ids``, ``attention_mask``, ``token_type_ids`` ``[N, L]``).
        prediction: ``"sample"`` (ELECTRA) or ``"argmax"`` (BERT).
        examples: collect up to this many corrected predictions (``electra.showcase.CorrectionExample`` dicts).
    Returns:
        dict with sequences, masked, mismatched, corrected, sequences_with_correction,
        prediction_level (corrected / mismatched), iteration_level (share of sequences with a correction) and,
        when ``examples > 0``, examples (a list of dicts: gold, prediction, context, synonyms).
    """
    generator.eval()
    device = next(generator.parameters()).device
    length = split.max_seq_length
    max_predictions = max_predictions or int(0.155 * length)
    names = ("masked", "mismatched", "corrected", "sequences_with_correction")
    counts = torch.zeros(len(names), dtype=torch.int64, device=device)  # read once, at the end
    sequences_seen = 0
    shown, seen = [], set()
    for i, batch in enumerate(eval_batches(split, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        batch = batch.to(device)
        # the head at the masked positions only, with pre-training's row keys and sampling stream
        head, gold, positions, valid, row_ids = masked_head(generator, batch, tokenizer, seed=seed,
                                                            max_predictions=max_predictions)
        out = tnops.linear_mlm_loss(head, generator.generator_lm_head.weight, torch.where(valid, gold, IGNORE_INDEX),
                                    bias=generator.generator_lm_head.bias, synonyms=synonyms, prediction=prediction,
                                    seed=derive_seed("sampling", seed), row_ids=row_ids,
                                    ignore_index=IGNORE_INDEX)
        corrected = out.corrected & valid
        counts += torch.stack([valid.sum(), (valid & (out.predictions != gold)).sum(), corrected.sum(),
                               corrected.any(dim=1).sum()])
        sequences_seen += len(gold)
        if len(shown) < examples:  # reads this batch back: only when examples are asked for
            shown += collect_examples(tokenizer, synonyms, batch.input_ids.cpu(), positions.cpu(),
                                      out.predictions.cpu(), corrected.cpu(), limit=examples - len(shown), seen=seen)
    totals = {"sequences": sequences_seen, **dict(zip(names, counts.tolist()))}
    totals["prediction_level"] = totals["corrected"] / max(totals["mismatched"], 1)
    totals["iteration_level"] = totals["sequences_with_correction"] / max(totals["sequences"], 1)
    if examples:
        totals["examples"] = [example.to_dict() for example in shown]
    return totals


def main(argv=None) -> int:
    """Run the command: 0 on success, 2 for bad arguments, models, tables or corpora (one line on stderr)."""
    p = ToolArgumentParser(prog="electra-fn-stats", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="export dir of electra-pretrain (…/final) or a generator dir")
    p.add_argument("--corpus", default=None, help="text file, directory, datasets name (default: built-in corpus)")
    p.add_argument("--synonyms", default=None, help="saved table (default: the one beside the model, else WordNet)")
    p.add_argument("--max-seq-length", type=integer(8), default=128)
    p.add_argument("--batch-size", type=integer(1), default=32)
    p.add_argument("--max-batches", type=integer(1), default=None)
    p.add_argument("--prediction", default="sample", choices=["sample", "argmax"])
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--examples", type=integer(0), default=0, help="print this many corrected predictions")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = p.parse_args(argv)
    return run_tool("electra-fn-stats", lambda: _run(args))


def _run(args) -> int:
    model_dir = Path(args.model)
    gen_dir = _generator_dir(model_dir)
    # first: a wrong directory fails before any tokenizing; never a randomly initialised generator head
    generator = load_generator(gen_dir, flag="--model", hint="it is a discriminator, without the generator's MLM "
                               "head; pass electra-pretrain's final/ or final/generator")
    tokenizer = load_tokenizer(str(gen_dir) if (gen_dir / "tokenizer_config.json").exists() else None)
    synonyms = _synonyms(args.synonyms, model_dir, tokenizer)
    dataset = build_dataset(args.corpus, tokenizer, args.max_seq_length, seed=args.seed, eval_fraction=0.0,
                            progress=False)
    stats = false_negative_stats(generator, tokenizer, synonyms, dataset.train, batch_size=args.batch_size,
                                 max_batches=args.max_batches, prediction=args.prediction, seed=args.seed,
                                 examples=args.examples)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"sequences {stats['sequences']}, masked {stats['masked']}, mismatched {stats['mismatched']}, "
              f"corrected {stats['corrected']}")
        print(f"prediction-level false-negative ratio (corrected / mismatched): {stats['prediction_level']:.2%}")
        print(f"iteration-level ratio (sequences with a correction):           {stats['iteration_level']:.2%}")
        print_examples(stats.get("examples"))
    return 0


def print_examples(examples: list[dict] | None) -> None:
    """The Figure-3-style lines of ``false_negative_stats(..., examples=N)["examples"]``."""
    if examples:
        print("corrected predictions (gold → prediction, the gold word in brackets, its listed synonyms):")
        for example in examples:
            print(format_example(CorrectionExample(**example)))


if __name__ == "__main__":
    raise SystemExit(main())
