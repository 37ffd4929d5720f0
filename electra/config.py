"""ELECTRA-TN configuration: model sizes, true-negative switches and the training recipe of each preset.

Presets follow google-research/electra's ``configure_pretraining.py`` (DESIGN §5); ``tiny`` is a CPU demo.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

PRESETS = {
    # name: discriminator sizes, generator fraction, and the recipe's training defaults
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256, embedding_size=64,
                 generator_fraction=0.25, max_seq_length=128, batch_size=16, learning_rate=1e-3,
                 max_steps=300, warmup_steps=30),
    "small": dict(hidden_size=256, num_layers=12, num_heads=4, intermediate_size=1024, embedding_size=128,
                  generator_fraction=0.25, max_seq_length=128, batch_size=128, learning_rate=5e-4,
                  max_steps=1_000_000, warmup_steps=10_000),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, embedding_size=768,
                 generator_fraction=1 / 3, max_seq_length=512, batch_size=256, learning_rate=2e-4,
                 max_steps=766_000, warmup_steps=10_000),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, embedding_size=1024,
                  generator_fraction=0.25, max_seq_length=512, batch_size=2048, learning_rate=2e-4,
                  max_steps=400_000, warmup_steps=10_000),
}


@dataclass
class ElectraTNConfig:
    """Everything that defines an ELECTRA-TN model and its pre-training recipe.

    The generator has the discriminator's depth and ``generator_fraction`` of its width, heads and FFN
    (at least one head).  ``hc``: hard correction with a synonym table; ``sr_weight``: soft regularization;
    ``sentence_sr_weight``: sentence-level SR (one more discriminator forward); ``disc_weight``: λ = 50;
    ``label_smoothing`` and ``z_loss``: the generator's CE options (``tnops.linear_mlm_loss``; 0: off).
    """

    vocab_size: int = 30522
    hidden_size: int = 256
    num_layers: int = 12
    num_heads: int = 4
    intermediate_size: int = 1024
    embedding_size: int = 128
    generator_fraction: float = 0.25
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    pad_token_id: int = 0
    mask_token_id: int = 103
    special_token_ids: list[int] = field(default_factory=lambda: [0, 100, 101, 102, 103])
    # masking and the true-negative objectives
    mask_prob: float = 0.15
    max_predictions: int = 19
    hc: bool = True
    sr_weight: float = 1.0
    sentence_sr_weight: float = 0.0
    disc_weight: float = 50.0
    temperature: float = 1.0
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    # recipe defaults (the CLI may override them)
    max_seq_length: int = 128
    batch_size: int = 128
    learning_rate: float = 5e-4
    max_steps: int = 1_000_000
    warmup_steps: int = 10_000
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 1.0
    preset: str = "small"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ElectraTNConfig:
        """The preset ``name`` (tiny, small, base, large) with ``overrides`` applied; ValueError for unknown names."""
        if name not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {name!r}")
        values = dict(PRESETS[name], preset=name)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ElectraTNConfig fields: {', '.join(sorted(unknown))}")
        values.update(overrides)
        config = cls(**values)
        if "max_predictions" not in overrides:  # ELECTRA: int((mask_prob + 0.005) * max_seq_length)
            config.max_predictions = int((config.mask_prob + 0.005) * config.max_seq_length)
        return config

    def for_tokenizer(self, tokenizer) -> ElectraTNConfig:
        """A copy whose vocabulary and special ids come from a Hugging Face tokenizer."""
        special = sorted({i for i in tokenizer.all_special_ids if i is not None})
        return dataclasses.replace(self, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                   mask_token_id=tokenizer.mask_token_id, special_token_ids=special)

    @property
    def generator_hidden_size(self) -> int:
        return max(1, round(self.hidden_size * self.generator_fraction))

    @property
    def generator_num_heads(self) -> int:
        return max(1, round(self.num_heads * self.generator_fraction))

    @property
    def generator_intermediate_size(self) -> int:
        return max(1, round(self.intermediate_size * self.generator_fraction))

    def hf_configs(self):
        """``(discriminator, generator)`` ``transformers.ElectraConfig`` objects."""
        from transformers import ElectraConfig

        common = dict(vocab_size=self.vocab_size, embedding_size=self.embedding_size,
                      num_hidden_layers=self.num_layers, max_position_embeddings=self.max_position_embeddings,
                      type_vocab_size=self.type_vocab_size, hidden_dropout_prob=self.dropout,
                      attention_probs_dropout_prob=self.dropout, pad_token_id=self.pad_token_id)
        disc = ElectraConfig(hidden_size=self.hidden_size, num_attention_heads=self.num_heads,
                             intermediate_size=self.intermediate_size, **common)
        gen = ElectraConfig(hidden_size=self.generator_hidden_size, num_attention_heads=self.generator_num_heads,
                            intermediate_size=self.generator_intermediate_size, **common)
        return disc, gen

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path) -> ElectraTNConfig:
        return cls(**json.loads(Path(path).read_text()))
