"""ELECTRA with true-negative objectives, built from Hugging Face transformers' ELECTRA modules.

Generator and discriminator share the whole embedding block (word, position and type tables and its
LayerNorm); each keeps its own embedding projection.  The generator head (dense → GELU → LayerNorm, from
``ElectraGeneratorPredictions``) is evaluated only at the masked positions (a fixed number per sequence,
ELECTRA's ``masked_lm_positions``) and goes through ``tnops.linear_mlm_loss`` with the tied word table and
its own bias, so the ``[masked × vocab]`` logits are never stored; its Gumbel-max samples become the
replacements.  Hard correction relabels a sampled
synonym as *original* for the discriminator (``tnops.rtd_loss``).  ``save_pretrained`` writes the two
halves as ``ElectraForPreTraining`` / ``ElectraForMaskedLM`` checkpoints that ``transformers`` loads.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import tnops
from electra.config import ElectraTNConfig
from electra.masking import IGNORE_INDEX, mask_tokens
from electra.seeds import derive_seed


@dataclass
class ElectraTNOutput:
    """Losses (scalars) and detached statistics of one pre-training step.

    ``loss = gen_loss + disc_weight · disc_loss + sr_weight · sr_loss + sentence_sr_weight · sentence_sr_loss``.
    ``stats``: 0-d tensors on the model's device (never Python numbers, so a step does not wait for the
    device): masked, corrected (int64 counts), replaced_rate, gen_accuracy, disc_accuracy (float fractions).
    """

    loss: torch.Tensor
    gen_loss: torch.Tensor
    disc_loss: torch.Tensor
    sr_loss: torch.Tensor
    sentence_sr_loss: torch.Tensor
    stats: dict = field(default_factory=dict)
    corrupted_ids: torch.Tensor | None = None
    disc_labels: torch.Tensor | None = None


class ElectraTNForPretraining(nn.Module):
    """Generator + discriminator pre-trained with hard correction and soft regularization.

    Args:
        config: ``ElectraTNConfig``.
        synonyms: ``tnops.SynonymTable`` over the model's vocabulary (needed when ``config.hc``).
        discriminator, generator: ``ElectraForPreTraining`` / ``ElectraForMaskedLM`` to use instead of fresh
            ones built from ``config`` (continued pre-training, :mod:`electra.init_from`).  The generator's own
            embedding block is replaced by the discriminator's.
    """

    def __init__(self, config: ElectraTNConfig, synonyms=None, *, discriminator=None, generator=None):
        super().__init__()
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        if config.hc and synonyms is None:
            raise ValueError("synonyms: hard correction (config.hc=True) needs a tnops.SynonymTable")
        if synonyms is not None and synonyms.vocab_size != config.vocab_size:
            raise ValueError(f"synonyms: table has {synonyms.vocab_size} tokens, the model {config.vocab_size}")
        self.config = config
        self.synonyms = synonyms
        disc_config, gen_config = config.hf_configs()
        self.discriminator = discriminator if discriminator is not None else ElectraForPreTraining(disc_config)
        self.generator = generator if generator is not None else ElectraForMaskedLM(gen_config)
        for half in (self.discriminator, self.generator):
            if half.config.vocab_size != config.vocab_size:
                raise ValueError(f"{type(half).__name__} has {half.config.vocab_size} tokens, "
                                 f"the config {config.vocab_size}")
        # One embedding block for both halves, and the generator's output tied to its word table.
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.embeddings.word_embeddings.weight

    @property
    def embeddings(self):
        return self.discriminator.electra.embeddings

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.embeddings.word_embeddings.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                *, seed: int, sequence_offset: int = 0,
                count_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ElectraTNOutput:
        """One pre-training step's losses, computed without reading anything back to the host.

        Args:
            input_ids, attention_mask, token_type_ids: int ``[B, L]`` original (unmasked) sequences.
            seed: the model seed: masking and sampling use the streams ``mask-select``, ``mask-keep`` and
                ``sampling`` derived from it (Philox, keyed by global sequence index and position).
            sequence_offset: global index of row 0 of this batch (data-parallel rank / micro-batch offset).
            count_reducer: maps the local normaliser counts ``[kept, masked, tokens]`` (float ``[3]``) to
                global ones (e.g. an all-reduce), so data-parallel losses equal one big batch's.
        Returns:
            ``ElectraTNOutput``; its ``stats`` are 0-d tensors on the model's device.
        """
        cfg = self.config
        batch, length = input_ids.shape
        masked = mask_tokens(input_ids, attention_mask, special_token_ids=cfg.special_token_ids,
                             mask_token_id=cfg.mask_token_id, seed=seed, sequence_offset=sequence_offset,
                             mask_prob=cfg.mask_prob, max_predictions=cfg.max_predictions)
        gen_states = self.generator.electra(masked.input_ids, attention_mask=attention_mask,
                                            token_type_ids=token_type_ids).last_hidden_state
        # The generator head runs on the P = max_predictions positions of each sequence (ELECTRA's
        # masked_lm_positions): fixed shapes, no boolean compaction.  Padding rows carry IGNORE_INDEX labels
        # and their own position's global row key, so every selected row's sample is what it always was.
        positions, valid = masked.positions, masked.valid  # [B, P]
        states = gen_states.gather(1, positions.unsqueeze(-1).expand(-1, -1, gen_states.shape[-1]))
        head_input = self.generator.generator_predictions(states)  # [B, P, E]
        gold = input_ids.gather(1, positions)
        labels = torch.where(valid, gold, IGNORE_INDEX)
        sequences = torch.arange(sequence_offset, sequence_offset + batch, device=input_ids.device)
        row_ids = sequences[:, None] * length + positions
        out = tnops.linear_mlm_loss(head_input, self.word_embeddings, labels,
                                    bias=self.generator.generator_lm_head.bias,
                                    synonyms=self.synonyms if cfg.hc else None, prediction="sample",
                                    temperature=cfg.temperature, seed=derive_seed("sampling", seed),
                                    sr_weight=cfg.sr_weight, row_ids=row_ids, ignore_index=IGNORE_INDEX,
                                    reduction="sum", label_smoothing=cfg.label_smoothing, z_loss=cfg.z_loss)
        sampled = torch.where(valid, out.predictions.detach(), gold)  # padding rows write their own token back
        corrected_rows = out.corrected & valid
        corrupted = input_ids.scatter(1, positions, sampled)  # the P positions of a row are distinct
        corrected = torch.zeros_like(masked.selected).scatter(1, positions, corrected_rows)
        disc_states = self.discriminator.electra(corrupted, attention_mask=attention_mask,
                                                 token_type_ids=token_type_ids).last_hidden_state
        disc_logits = self.discriminator.discriminator_predictions(disc_states)
        disc_sum = tnops.rtd_loss(disc_logits, corrupted, input_ids, attention_mask, corrected, reduction="sum")
        real = attention_mask.bool()
        sentence_sum = disc_sum.new_zeros(())
        if cfg.sentence_sr_weight:
            original_states = self.discriminator.electra(input_ids, attention_mask=attention_mask,
                                                         token_type_ids=token_type_ids).last_hidden_state
            sentence_sum = tnops.sentence_sr_loss(disc_states, original_states, attention_mask) * real.sum()
        masked_count = valid.sum()
        counts = torch.stack([(valid & ~corrected_rows).sum(), masked_count, real.sum()]).float()
        if count_reducer is not None:
            counts = count_reducer(counts)
        counts = counts.clamp_min(1.0)
        # the generator's objective: its CE, plus the z-loss when on (then only out.loss carries that gradient)
        gen_loss = (out.loss - cfg.sr_weight * out.sr_loss if cfg.z_loss else out.mlm_loss) / counts[0]
        sr_loss = out.sr_loss / counts[1]
        disc_loss = disc_sum / counts[2]
        sentence_sr = sentence_sum / counts[2]
        loss = gen_loss + cfg.disc_weight * disc_loss + cfg.sr_weight * sr_loss + cfg.sentence_sr_weight * sentence_sr
        disc_labels = (corrupted != input_ids) & ~corrected
        with torch.no_grad():  # 0-d tensors: the trainer reads them only when it logs
            selected_count = masked_count.clamp_min(1)
            stats = {
                "masked": masked_count,
                "corrected": corrected_rows.sum(),
                "replaced_rate": (corrupted != input_ids).sum() / selected_count,
                "gen_accuracy": ((sampled == gold) & valid).sum() / selected_count,
                "disc_accuracy": (((disc_logits > 0) == disc_labels) & real).sum() / real.sum().clamp_min(1),
            }
        return ElectraTNOutput(loss, gen_loss, disc_loss, sr_loss, sentence_sr, stats, corrupted, disc_labels)

    def save_pretrained(self, directory, tokenizer=None) -> dict:
        """Write ``directory/discriminator`` (ElectraForPreTraining) and ``directory/generator`` (ElectraForMaskedLM)
        in Hugging Face format, the tokenizer beside each, the synonym table and the tnops config.

        Returns:
            ``{"discriminator": path, "generator": path}``.
        """
        directory = Path(directory)
        paths = {"discriminator": directory / "discriminator", "generator": directory / "generator"}
        for name, path in paths.items():
            getattr(self, name).save_pretrained(path)
            if tokenizer is not None:
                tokenizer.save_pretrained(path)
        self.config.save(directory / "electra_tn_config.json")
        if self.synonyms is not None:
            self.synonyms.save(directory / "synonyms.pt")
        return paths
