"""Held-out evaluation of an ELECTRA export: ``electra-eval`` (also ``python -m electra.eval``).

    electra-eval --model DIR [--corpus C] [--max-batches N] [--batch-size B] [--max-seq-length L]
                 [--synonyms FILE|wordnet] [--seed S] [--json OUT] [--no-progress]

``--model`` is electra-pretrain's ``OUTPUT_DIR/final`` (both halves), or its ``generator/`` or ``discriminator/``
alone.  The held-out data is ``build_dataset(corpus, tokenizer, L, seed=S)``'s ``eval`` split (the split
pre-training held out when run with the same corpus, L and seed), masked as pre-training masks
(:func:`electra.masking.mask_tokens`, model seed S, as ``electra-fn-stats`` and the run's ``summary.json``):

* ``mlm_accuracy``: the generator's argmax equals the gold token, over the masked positions;
  ``mlm_accuracy_synonym``: the same, a listed synonym of the gold token also counting as right;
* ``fn_prediction_ratio``, ``fn_iteration_ratio``: paper Table 2 as ``electra-fn-stats`` counts it, with Gumbel
  *sampled* predictions (the ELECTRA setting): corrected / wrong predictions, and sequences with a correction;
* ``rtd_accuracy``, ``rtd_auc``: the masked positions replaced by the generator's samples (as pre-training
  does); a token is *replaced* iff its sample differs from the gold token, except that with hard correction
  (the run's ``electra_tn_config.json``; on when absent) a sampled listed synonym is labelled *original*, as the
  trainer labels it.  The discriminator says *replaced* where its logit is > 0.  Accuracy and ROC AUC (logits as
  scores) over all non-padding tokens;
* ``rtd_synonym_original``: of the positions whose replacement is a listed synonym of the gold token, the share
  the discriminator calls original;
* ``simlex999``, ``wordsim353`` (and ``*_pairs``): :mod:`electra.lexsim` on the shared input word embeddings;
* ``masked``, ``sequences``: what the scores were counted over.

A score whose model half or data is missing is None, and ``reasons[key]`` says why; no number is made up.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

import tnops
from electra import lexsim
from electra.arguments import integer
from electra.batches import check_int, eval_batches
from electra.dataset import build_dataset
from electra.eval_batch import corrupt_batch, masked_lm_counts, replaced_token_labels, rtd_scores
from electra.fn_stats import _generator_dir, _synonyms, false_negative_stats
from electra.init_from import _load_half, load_generator
from electra.tokenizer import load_tokenizer
from tnops.cli import ToolArgumentParser, run_tool
from tnops.io import atomic_write

__all__ = ["KEYS", "corrupt_batch", "evaluate_model", "format_table", "main", "masked_lm_counts",
           "replaced_token_labels", "resolve_model", "rtd_scores"]

KEYS = ("mlm_accuracy", "mlm_accuracy_synonym", "fn_prediction_ratio", "fn_iteration_ratio", "rtd_accuracy",
        "rtd_auc", "rtd_synonym_original", "simlex999", "simlex999_pairs", "wordsim353", "wordsim353_pairs",
        "masked", "sequences")
_GENERATOR_KEYS = ("mlm_accuracy", "mlm_accuracy_synonym", "fn_prediction_ratio", "fn_iteration_ratio", "masked",
                   "sequences")
_RTD_KEYS = ("rtd_accuracy", "rtd_auc", "rtd_synonym_original")
_EXPECTED = ("expected electra-pretrain's OUTPUT_DIR/final (generator/ and discriminator/), or a generator "
             "(ElectraForMaskedLM) or discriminator (ElectraForPreTraining) directory")


# ----------------------------------------------------------------------------------------------- the model
def _read_json(path: Path):
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--model: {path} is not readable JSON ({type(error).__name__})") from None


def resolve_model(model_dir) -> tuple[Path | None, Path | None]:
    """``(generator_dir, discriminator_dir)`` of ``--model`` (None: that half is absent).

    Raises:
        FileNotFoundError: ``model_dir`` is missing or not a directory.
        ValueError: it holds neither half (the message says what was expected).
    """
    model = Path(model_dir).expanduser()
    if not model.is_dir():
        raise FileNotFoundError(f"--model: {'not a directory' if model.exists() else 'no such directory'}: "
                                f"{str(model_dir)!r}; {_EXPECTED}")
    try:
        generator = _generator_dir(model)  # final/generator, or the directory itself when it has a config
    except ValueError:
        generator = None  # neither a generator/ nor a config.json here
    discriminator = model / "discriminator" if (model / "discriminator").is_dir() else None
    if generator == model:  # one checkpoint directory: which half is it?
        config = _read_json(model / "config.json")
        architectures = list(config.get("architectures") or []) if isinstance(config, dict) else []
        if "ElectraForPreTraining" in architectures:
            generator, discriminator = None, model
        elif "ElectraForMaskedLM" not in architectures:
            raise ValueError(f"--model: {model} holds a {', '.join(architectures) or 'model without architectures'}; "
                             f"{_EXPECTED}")
    if generator is None and discriminator is None:
        raise ValueError(f"--model: {model} holds no model: {_EXPECTED}")
    return generator, discriminator


def _tokenizer(directory: Path, vocab_size: int):
    tokenizer = load_tokenizer(str(directory) if (directory / "tokenizer_config.json").is_file() else None)
    if len(tokenizer) != vocab_size:
        raise ValueError(f"--model: {directory} has a vocabulary of {vocab_size} tokens but its tokenizer "
                         f"({getattr(tokenizer, 'name_or_path', '?')}) has {len(tokenizer)}; save the model's "
                         "tokenizer beside its weights")
    return tokenizer


def _run_config(*directories) -> dict:
    """``hc`` and ``temperature`` of the run (``electra_tn_config.json`` in ``final/``), the trainer's defaults
    (hard correction on, temperature 1) when there is none."""
    for path in (directory / "electra_tn_config.json" for directory in directories):
        if path.is_file():
            config = _read_json(path)
            return {"hc": bool(config.get("hc", True)), "temperature": float(config.get("temperature", 1.0))}
    return {"hc": True, "temperature": 1.0}


def _synonym_table(synonyms, model_dir: Path, tokenizer):
    """``synonyms``: a SynonymTable, ``"wordnet"``, a saved table's path, or None (the one beside the model,
    else WordNet, as electra-fn-stats)."""
    if isinstance(synonyms, tnops.SynonymTable):
        if synonyms.vocab_size != len(tokenizer):
            raise ValueError(f"synonyms: the table has {synonyms.vocab_size} tokens, the model's tokenizer "
                             f"{len(tokenizer)}")
        return synonyms
    if synonyms == "wordnet":
        return tnops.SynonymTable.from_wordnet(tokenizer, progress=False)
    if synonyms is not None and not Path(synonyms).expanduser().is_file():
        raise FileNotFoundError(f"--synonyms: no such file: {str(synonyms)!r}; expected a saved tnops.SynonymTable "
                                "or 'wordnet'")
    return _synonyms(Path(synonyms).expanduser() if synonyms is not None else None, model_dir, tokenizer)


@torch.no_grad()
def _held_out_pass(generator, discriminator, split, tokenizer, synonyms, run: dict, *, batch_size, max_batches,
                   seed, max_predictions, progress) -> dict:
    """One pass over the held-out batches: MLM counts and (with a discriminator) the RTD logits and labels."""
    device = next(generator.parameters()).device
    counts = torch.zeros(3, dtype=torch.int64, device=device)
    logits, labels, synonym_rows, sequences = [], [], [], 0
    total = math.ceil(len(split) / batch_size)
    total = total if max_batches is None else min(total, max_batches)
    for i, batch in enumerate(tqdm(eval_batches(split, batch_size), total=total, desc="electra-eval",
                                   unit="batch", disable=not progress)):
        if i >= total:
            break
        batch = batch.to(device)
        out = corrupt_batch(generator, batch, tokenizer, synonyms, run, seed=seed, max_predictions=max_predictions)
        counts += masked_lm_counts(out["argmax"], out["gold"], out["valid"], synonyms)
        sequences += len(out["gold"])
        if discriminator is not None:
            scores = discriminator(out["corrupted"], attention_mask=batch.attention_mask,
                                   token_type_ids=batch.token_type_ids).logits
            real = batch.attention_mask.bool()
            logits.append(scores[real].float().cpu())
            labels.append(out["labels"][real].cpu())
            # replaced by a listed synonym (so not by the gold token itself)
            synonym_rows.append(synonyms.is_synonym(batch.input_ids, out["corrupted"])[real].cpu())
    masked_count, right, credited = counts.tolist()
    joined = (lambda parts: torch.cat(parts)) if logits else (lambda parts: None)
    return {"masked": masked_count, "right": right, "credited": credited, "sequences": sequences,
            "logits": joined(logits), "labels": joined(labels), "synonym_rows": joined(synonym_rows)}


def _lexical_scores(embeddings: torch.Tensor, tokenizer, result: dict, reasons: dict) -> None:
    for name in lexsim.BENCHMARKS:
        try:
            result[name], result[f"{name}_pairs"] = lexsim.similarity_scores(embeddings, tokenizer,
                                                                            lexsim.load_pairs(name))
        except (ImportError, ValueError) as error:
            reasons[name] = reasons[f"{name}_pairs"] = " ".join(str(error).split())


def _evaluate(model_dir, *, corpus, max_seq_length, max_batches, batch_size, synonyms, seed, progress):
    """``(result, info)``: :func:`evaluate_model`'s dict and what the CLI prints above it (halves, synonyms)."""
    max_seq_length = check_int("max_seq_length", max_seq_length, 8)
    batch_size = check_int("batch_size", batch_size, 1)
    max_batches = None if max_batches is None else check_int("max_batches", max_batches, 1)
    seed = check_int("seed", seed, 0)
    model_dir = Path(model_dir).expanduser()
    gen_dir, disc_dir = resolve_model(model_dir)
    hint = "it is a discriminator; pass electra-pretrain's final/ or final/generator"
    generator = load_generator(gen_dir, flag="--model", hint=hint) if gen_dir else None
    discriminator = None
    if disc_dir is not None:
        from transformers import ElectraForPreTraining

        discriminator = _load_half(ElectraForPreTraining, disc_dir, None, flag="--model",
                                   hint="it is a generator; pass electra-pretrain's final/ or final/discriminator")
    main_half, main_dir = (discriminator, disc_dir) if discriminator is not None else (generator, gen_dir)
    tokenizer = _tokenizer(main_dir, main_half.config.vocab_size)
    for half, directory in ((generator, gen_dir), (discriminator, disc_dir)):
        if half is not None and half.config.max_position_embeddings < max_seq_length:
            raise ValueError(f"--max-seq-length: {max_seq_length} is longer than {directory}'s position table "
                             f"({half.config.max_position_embeddings})")
    if generator is not None and discriminator is not None and generator.config.vocab_size != len(tokenizer):
        raise ValueError(f"--model: {gen_dir} has {generator.config.vocab_size} tokens, {disc_dir} "
                         f"{len(tokenizer)}; the two halves must share one vocabulary")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result, reasons = dict.fromkeys(KEYS), {}
    result["reasons"] = reasons  # filled below: a reason for every key left None
    info = {"model": str(model_dir), "generator": str(gen_dir) if gen_dir else None,
            "discriminator": str(disc_dir) if disc_dir else None, "synonyms": None}
    # the shared input word table (DESIGN §5): the discriminator's, else the generator's copy of it
    _lexical_scores(main_half.electra.embeddings.word_embeddings.weight, tokenizer, result, reasons)
    if generator is None:
        reasons.update(dict.fromkeys(_GENERATOR_KEYS, f"no generator in {model_dir} (a discriminator alone): "
                                     "masked-token predictions need the generator's MLM head"))
        reasons.update(dict.fromkeys(_RTD_KEYS, f"no generator in {model_dir}: the RTD inputs are its samples"))
        return result, info
    generator.to(device).eval()
    if discriminator is not None:
        discriminator.to(device).eval()
    run = _run_config(model_dir, gen_dir.parent)
    table = _synonym_table(synonyms, model_dir, tokenizer).to(device)
    info["synonyms"] = repr(table)
    split = build_dataset(corpus, tokenizer, max_seq_length, seed=seed, progress=progress).eval
    max_predictions = int(0.155 * max_seq_length)  # ELECTRA's int((0.15 + 0.005) L), as electra-fn-stats
    if len(split) == 0:
        reasons.update(dict.fromkeys((*_GENERATOR_KEYS, *_RTD_KEYS), "the held-out split is empty: the corpus is "
                                     f"too small for a held-out example at --max-seq-length {max_seq_length}"))
        return result, info
    seen = _held_out_pass(generator, discriminator, split, tokenizer, table, run, batch_size=batch_size,
                          max_batches=max_batches, seed=seed, max_predictions=max_predictions, progress=progress)
    result["masked"], result["sequences"] = seen["masked"], seen["sequences"]
    if seen["masked"]:
        result["mlm_accuracy"] = seen["right"] / seen["masked"]
        result["mlm_accuracy_synonym"] = seen["credited"] / seen["masked"]
    else:
        reasons["mlm_accuracy"] = reasons["mlm_accuracy_synonym"] = "no held-out token was maskable"
    fn = false_negative_stats(generator, tokenizer, table, split, batch_size=batch_size, max_batches=max_batches,
                              prediction="sample", seed=seed, max_predictions=max_predictions)
    if fn["mismatched"]:
        result["fn_prediction_ratio"] = fn["prediction_level"]
    else:
        reasons["fn_prediction_ratio"] = "no sampled prediction was wrong: corrected / wrong is undefined"
    result["fn_iteration_ratio"] = fn["iteration_level"]
    if discriminator is None:
        reasons.update(dict.fromkeys(_RTD_KEYS, f"no discriminator in {model_dir} (a generator alone)"))
    else:
        scores, why = rtd_scores(seen["logits"], seen["labels"], seen["synonym_rows"])
        result.update(scores)
        reasons.update(why)
    return result, info


def evaluate_model(model_dir, *, corpus=None, max_seq_length: int = 128, max_batches: int | None = 8,
                   batch_size: int = 32, synonyms=None, seed: int = 0, progress: bool = True) -> dict:
    """Evaluate an electra-pretrain export on held-out text (see the module docstring for each score): MLM
    accuracy from the generator's argmax, the false-negative ratios and the RTD inputs from its Gumbel samples
    (the ELECTRA setting, as electra-fn-stats and pre-training).

    Args:
        model_dir: ``OUTPUT_DIR/final``, or a generator or discriminator directory.
        corpus: see :func:`electra.dataset.build_dataset` (None: the built-in corpus); its ``eval`` split is read.
        max_seq_length: L (at least 8, at most the model's position table).
        max_batches: held-out batches read (None: all); batch_size: sequences per batch.
        synonyms: a saved ``tnops.SynonymTable`` path, ``"wordnet"``, a table, or None (the table beside the
            model, else WordNet).
        seed: the data seed (the held-out split) and the model seed (masks and samples).
        progress: show tqdm bars.
    Returns:
        dict with exactly :data:`KEYS` (floats in [0, 1] or [-1, 1] for the correlations, ints for counts, or
        None) plus ``reasons``: ``{key: one-line reason}`` for every key whose value is None.
    Raises:
        FileNotFoundError, ValueError, TypeError: a missing or unusable model directory, table, corpus or value.
    """
    result, _ = _evaluate(model_dir, corpus=corpus, max_seq_length=max_seq_length, max_batches=max_batches,
                          batch_size=batch_size, synonyms=synonyms, seed=seed, progress=progress)
    return result


# ------------------------------------------------------------------------------------------------ the CLI
_ROWS = (("mlm_accuracy", "generator MLM accuracy (argmax)", "%"),
         ("mlm_accuracy_synonym", "  crediting listed synonyms", "%"),
         ("fn_prediction_ratio", "false negatives / wrong predictions (sampled)", "%"),
         ("fn_iteration_ratio", "sequences with a false negative", "%"),
         ("rtd_accuracy", "RTD accuracy (non-padding tokens)", "%"),
         ("rtd_auc", "RTD ROC AUC", "f"),
         ("rtd_synonym_original", "synonym replacements called original", "%"),
         ("simlex999", "SimLex-999 Spearman", "f"),
         ("wordsim353", "WordSim-353 Spearman", "f"))


def format_table(result: dict) -> str:
    """The scores of :func:`evaluate_model` as a small text table (percentages, correlations, or n/a + reason)."""
    lines = [f"{'score':<46} value"]
    for key, label, kind in _ROWS:
        value = result.get(key)
        if key in ("simlex999", "wordsim353") and result.get(f"{key}_pairs") is not None:
            label = f"{label} ({result[f'{key}_pairs']} pairs)"
        if value is None:
            shown = f"n/a: {result.get('reasons', {}).get(key, 'not computed')}"
        else:
            shown = f"{100 * value:6.2f} %" if kind == "%" else f"{value:7.4f}"
        lines.append(f"{label:<46} {shown}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the command: 0 on success, 2 for bad arguments, models, tables or corpora (one line on stderr)."""
    p = ToolArgumentParser(prog="electra-eval", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="electra-pretrain's OUTPUT_DIR/final, or final/generator or "
                   "final/discriminator alone")
    p.add_argument("--corpus", default=None, help="text file, directory, datasets name (default: built-in corpus); "
                   "its held-out split is read")
    p.add_argument("--max-batches", type=integer(1), default=8)
    p.add_argument("--batch-size", type=integer(1), default=32)
    p.add_argument("--max-seq-length", type=integer(8), default=128)
    p.add_argument("--synonyms", default=None, metavar="FILE|wordnet",
                   help="a saved tnops.SynonymTable, or wordnet (default: the table beside the model, else WordNet)")
    p.add_argument("--seed", type=integer(0), default=0, help="the run's seed: held-out split, masks, samples")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the scores as JSON to this file")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    return run_tool("electra-eval", lambda: _run(args))


def _run(args) -> int:
    result, info = _evaluate(args.model, corpus=args.corpus, max_seq_length=args.max_seq_length,
                             max_batches=args.max_batches, batch_size=args.batch_size, synonyms=args.synonyms,
                             seed=args.seed, progress=not args.no_progress)
    if args.json:
        text = json.dumps(result, indent=1) + "\n"
        atomic_write(args.json, lambda handle: handle.write(text.encode("utf-8")), what="JSON", argument="--json")
    halves = " + ".join(name for name in ("generator", "discriminator") if info[name])
    counted = (f"{result['sequences']} held-out sequences, {result['masked']} masked tokens"
               if result["sequences"] is not None else "no held-out pass")
    print(f"electra-eval {info['model']} ({halves}; {counted})")
    if info["synonyms"]:
        print(f"synonyms: {info['synonyms']}")
    print(format_table(result))
    if args.json:
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
