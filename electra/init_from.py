"""Continued pre-training and pretrained generators: ``electra-pretrain [--init-from DIR] [--generator-from SRC]``.

``--init-from`` names a transformers ``ElectraForPreTraining`` checkpoint directory (this trainer's export
``final/discriminator``, or a published ELECTRA discriminator); ``--generator-from`` a generator: an
``ElectraForMaskedLM`` directory (``final/generator``), any BERT checkpoint (``BertModel``, ``BertForMaskedLM``,
``BertForPreTraining``; :mod:`electra.from_bert` maps it), or ``minilm``, the MiniLM-L6-H384 encoder packaged
offline with bert-base-uncased's vocabulary.

* Both given: the two halves share the discriminator's whole embedding block (DESIGN §5); the loaded generator
  keeps its own encoder, embedding projection, head and output bias, and its copy of the embeddings is dropped.
* ``--init-from`` alone: a fresh generator at the preset's ``generator_fraction`` of the discriminator's width,
  with the discriminator's activation and norms, on the discriminator's embedding block.
* ``--generator-from`` alone: a fresh discriminator sized by ``--preset`` gets the *generator's* embedding block
  (a pretrained generator's word table is what its predictions are made of), with an ``embeddings_project`` where
  the widths differ; vocabulary and tokenizer come from the generator.

Either way the generator's output is tied to the shared word table.

The model's sizes come from the checkpoint, the recipe (learning rate, batch, steps, warm-up) from the preset
and the command line.  The tokenizer is the one saved beside the weights (the export writes it there),
else ``--tokenizer``.  Weights are read by ``transformers``' ``from_pretrained`` (safetensors, or
``pytorch_model.bin`` with ``weights_only=True``), offline; a file that would leave any parameter randomly
initialised is refused.
"""
from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from electra import from_bert
from electra.config import PRESETS, ElectraTNConfig
from electra.modeling import ElectraTNForPretraining
from electra.tokenizer import load_tokenizer, tokenizer_fingerprint

__all__ = ["Pretrained", "build_model", "check_config", "checkpoint_sizes", "load_generator", "load_pretrained"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
# What the two halves must agree on to share one embedding block.
SHARED_SIZES = ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size")
_WHAT = {"ElectraForPreTraining": ("--init-from", "an ElectraForPreTraining (discriminator)", "--generator-from"),
         "ElectraForMaskedLM": ("--generator-from", "an ElectraForMaskedLM (generator)", "--init-from")}


@dataclass
class Pretrained:
    """What ``--init-from`` / ``--generator-from`` loaded: the two halves (None: build that half fresh; at least
    one is loaded) and the tokenizer of their vocabulary."""

    directory: Path | None
    discriminator: torch.nn.Module | None
    generator: torch.nn.Module | None
    tokenizer: object
    generator_directory: Path | None = None


def _directory(path, flag: str) -> Path:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise FileNotFoundError(f"{flag}: {what}: {str(path)!r}; expected a transformers ELECTRA checkpoint "
                                "directory (config.json and model.safetensors), e.g. OUTPUT_DIR/final/discriminator")
    return directory.resolve()


def _electra_config(directory: Path, flag: str) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        names = ("generator", "discriminator") if flag == "--generator-from" else ("discriminator", "generator")
        inside = [name for name in names if (directory / name / "config.json").is_file()]
        hint = f"; an export of this trainer? pass {directory / inside[0]}" if inside else ""
        raise ValueError(f"{flag}: {directory} is not a transformers checkpoint (no config.json){hint}")
    try:
        config = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{flag}: {path} is not a readable config ({type(error).__name__}: {error})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "electra":
        raise ValueError(f"{flag}: {directory} is not an ELECTRA checkpoint (config.json model_type "
                         f"{model_type!r}, expected 'electra')")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"{flag}: {directory} holds no weights (expected one of {', '.join(WEIGHT_FILES)})")
    return config


@contextmanager
def quiet_transformers():
    """transformers' warnings and weight-loading bar silenced inside the block (restored after)."""
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def _load_half(cls, directory: Path, dropout: float | None, *, flag: str | None = None, hint: str | None = None):
    """``cls.from_pretrained`` in fp32, offline; ValueError naming the flag when any weight is missing or misshapen.

    ``flag`` (default: the flag of ``cls`` here) names the option in messages; ``hint`` replaces "is it for
    OTHER-FLAG?" when the checkpoint holds the other half (another tool's advice)."""
    default_flag, what, other = _WHAT[cls.__name__]
    flag = flag or default_flag
    config = _electra_config(directory, flag)
    options = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    try:
        with quiet_transformers():  # its load report and progress bar: a missing weight is an error here
            model, info = cls.from_pretrained(directory, local_files_only=True, dtype=torch.float32,
                                              output_loading_info=True, **options)
    except Exception as error:  # transformers raises OSError/ValueError/RuntimeError/... depending on the file
        first = (str(error).splitlines() or [""])[0][:300]
        raise ValueError(f"{flag}: cannot load {directory} as {cls.__name__} "
                         f"({type(error).__name__}: {first})") from None
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        saved = ", ".join(config.get("architectures") or []) or "unknown"
        advice = f"; {hint or f'is it for {other}?'}" if saved in _WHAT and saved != cls.__name__ else ""
        raise ValueError(f"{flag}: {directory} is not {what} checkpoint: {len(missing)} weights missing or of "
                         f"another shape ({', '.join(sorted(missing)[:3])}, ...; saved architectures: {saved}){advice}")
    return model


def load_generator(directory, *, flag: str = "--generator-from", hint: str | None = None):
    """The ElectraForMaskedLM in ``directory`` (fp32, offline), every weight present: ValueError naming ``flag``
    for another model type, a missing generator head (``hint`` as the advice) or unreadable weights."""
    from transformers import ElectraForMaskedLM

    return _load_half(ElectraForMaskedLM, Path(directory), None, flag=flag, hint=hint)


def _tokenizer(directory: Path, fallback, flag: str = "--init-from"):
    """The tokenizer saved beside the weights, else ``--tokenizer`` (default bert-base-uncased)."""
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return load_tokenizer(fallback)
    tokenizer = load_tokenizer(str(directory))
    if fallback is not None and tokenizer_fingerprint(load_tokenizer(fallback)) != tokenizer_fingerprint(tokenizer):
        raise ValueError(f"--tokenizer: {fallback!r} differs from the tokenizer saved beside {flag} {directory}; "
                         "leave --tokenizer out (it is only the fallback for a checkpoint without one)")
    return tokenizer


def _check_generator(generator, generator_dir: Path, discriminator, tokenizer) -> None:
    """The generator must share the discriminator's embedding block: same vocabulary and table sizes."""
    for name in SHARED_SIZES:
        ours, theirs = getattr(discriminator.config, name), getattr(generator.config, name)
        if ours != theirs:
            raise ValueError(f"--generator-from: {generator_dir} has {name} {theirs}, the discriminator of "
                             f"--init-from {ours}; the two must share one embedding block (same vocabulary)")
    if any((generator_dir / name).is_file() for name in TOKENIZER_FILES):
        if load_tokenizer(str(generator_dir)).get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"--generator-from: the vocabulary saved in {generator_dir} differs from the one "
                             "of --init-from (another tokenizer); the two halves must share one vocabulary")


def _generator(generator_from, dropout: float | None):
    """``(generator, directory)`` of ``--generator-from``: an ELECTRA generator, a BERT checkpoint or ``minilm``."""
    from transformers import ElectraForMaskedLM

    directory = from_bert.resolve_source(generator_from)
    if from_bert.checkpoint_kind(directory) == "bert":
        generator, _, directory = from_bert.load_bert_generator(directory, dropout)
        return generator, directory
    return _load_half(ElectraForMaskedLM, directory, dropout), directory


def load_pretrained(init_from=None, generator_from=None, tokenizer=None, dropout: float | None = None) -> Pretrained:
    """Load ``--init-from`` and/or ``--generator-from`` and their tokenizer.

    Args:
        init_from: ElectraForPreTraining checkpoint directory, or None (a fresh discriminator).
        generator_from: ElectraForMaskedLM or BERT checkpoint directory, ``"minilm"``, or None (a fresh generator).
        tokenizer: ``--tokenizer``: used when no tokenizer is saved beside the weights.
        dropout: ``--dropout`` (None: the checkpoint's).

    Raises:
        FileNotFoundError: a directory is missing.
        ValueError: neither given; not a checkpoint of a supported kind; weights missing; or the halves'
            vocabularies (or the tokenizer's) differ.  The message names the flag.
    """
    from transformers import ElectraForPreTraining

    if init_from is None and generator_from is None:
        raise ValueError("load_pretrained: expected --init-from and/or --generator-from")
    directory = _directory(init_from, "--init-from") if init_from is not None else None
    discriminator = _load_half(ElectraForPreTraining, directory, dropout) if directory is not None else None
    generator, generator_dir = _generator(generator_from, dropout) if generator_from is not None else (None, None)
    main, flag = (discriminator, "--init-from") if discriminator is not None else (generator, "--generator-from")
    source = directory if discriminator is not None else generator_dir
    vocab = _tokenizer(source, tokenizer, flag)
    if len(vocab) != main.config.vocab_size:
        raise ValueError(f"{flag}: {source} has a vocabulary of {main.config.vocab_size} tokens but its tokenizer "
                         f"({getattr(vocab, 'name_or_path', '?')}) has {len(vocab)}; save the checkpoint's own "
                         "tokenizer beside it or pass it as --tokenizer")
    if discriminator is not None and generator is not None:
        _check_generator(generator, generator_dir, discriminator, vocab)
    return Pretrained(directory, discriminator, generator, vocab, generator_dir)


def checkpoint_sizes(pretrained: Pretrained, preset: str = "small") -> dict:
    """ElectraTNConfig fields taken from the checkpoint instead of the preset (the model's sizes).  With a loaded
    generator alone, the discriminator keeps the preset's sizes around the generator's embedding block."""
    gen = pretrained.generator.config if pretrained.generator is not None else None
    if pretrained.discriminator is None:
        return dict(vocab_size=gen.vocab_size, embedding_size=gen.embedding_size,
                    max_position_embeddings=gen.max_position_embeddings, type_vocab_size=gen.type_vocab_size,
                    generator_fraction=gen.hidden_size / PRESETS[preset]["hidden_size"])
    disc = pretrained.discriminator.config
    sizes = dict(vocab_size=disc.vocab_size, hidden_size=disc.hidden_size, num_layers=disc.num_hidden_layers,
                 num_heads=disc.num_attention_heads, intermediate_size=disc.intermediate_size,
                 embedding_size=disc.embedding_size, max_position_embeddings=disc.max_position_embeddings,
                 type_vocab_size=disc.type_vocab_size, dropout=disc.hidden_dropout_prob)
    if gen is not None:
        sizes["generator_fraction"] = gen.hidden_size / disc.hidden_size
    return sizes


def check_config(pretrained: Pretrained, config: ElectraTNConfig) -> None:
    """ValueError when the recipe does not fit the checkpoint (sequences longer than its position table)."""
    half, flag = ((pretrained.discriminator, "--init-from") if pretrained.discriminator is not None
                  else (pretrained.generator, "--generator-from"))
    positions = half.config.max_position_embeddings
    if config.max_seq_length > positions:
        raise ValueError(f"--max-seq-length: {config.max_seq_length} is longer than the {flag} checkpoint's "
                         f"position table ({positions}); pass --max-seq-length {positions} or less")


def build_model(pretrained: Pretrained, config: ElectraTNConfig, synonyms=None) -> ElectraTNForPretraining:
    """The pre-training model around the loaded halves; a fresh generator (``config.generator_fraction`` of the
    discriminator's width, its depth, activation and norms) when none was loaded.  Call after seeding."""
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    generator, discriminator = pretrained.generator, pretrained.discriminator
    if discriminator is None:  # a pretrained generator alone: a fresh discriminator on the generator's block
        discriminator = ElectraForPreTraining(config.hf_configs()[0])
        discriminator.electra.embeddings = generator.electra.embeddings
        return ElectraTNForPretraining(config, synonyms, discriminator=discriminator, generator=generator)
    if generator is None:
        gen_config = copy.deepcopy(pretrained.discriminator.config)
        gen_config.hidden_size = config.generator_hidden_size
        gen_config.num_attention_heads = config.generator_num_heads
        gen_config.intermediate_size = config.generator_intermediate_size
        gen_config.architectures = ["ElectraForMaskedLM"]
        generator = ElectraForMaskedLM(gen_config)
    return ElectraTNForPretraining(config, synonyms, discriminator=pretrained.discriminator, generator=generator)
