"""Module forms of the tnops losses, for code that expects ``nn.Module`` losses."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from tnops import functional
from tnops.options import MLMOptions
from tnops.outputs import MLMLossOutput


class _MLMLossModule(nn.Module):
    def __init__(self, synonyms, backend: str | None, **keywords):
        super().__init__()
        self.options = MLMOptions(**keywords)  # validated here, so a typo fails where the loss is built
        if synonyms is not None and not (hasattr(synonyms, "is_synonym") and hasattr(synonyms, "vocab_size")):
            raise TypeError(f"synonyms: expected a tnops.SynonymTable or None, got {type(synonyms).__name__}")
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"backend: expected a str or None, got {type(backend).__name__}")
        self.synonyms = synonyms
        self.backend = backend
        self.last_output: MLMLossOutput | None = None

    def _keywords(self) -> dict:
        keywords = {f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)}
        return dict(keywords, synonyms=self.synonyms, backend=self.backend)

    def extra_repr(self) -> str:
        table = "None" if self.synonyms is None else f"{self.synonyms.num_pairs} pairs"
        fields = ", ".join(f"{f.name}={getattr(self.options, f.name)!r}" for f in dataclasses.fields(self.options)
                           if f.name != "seed")
        return f"synonyms={table}, {fields}"


class TrueNegativeCrossEntropy(_MLMLossModule):
    """Drop-in for ``nn.CrossEntropyLoss`` in BERT-style MLM code, with hard correction (and optional SR).

    ``loss_fct(logits.view(-1, V), labels.view(-1))`` keeps working and returns the loss tensor; the full
    ``MLMLossOutput`` (predictions, corrected rows, the two terms) of the last call is in ``last_output``.

    Args:
        synonyms: ``tnops.SynonymTable`` over the model's vocabulary, or None.
        sr_embedding: ``[V, E]`` word-embedding table for soft regularization (needed when ``sr_weight > 0``);
            pass the Parameter itself (e.g. ``model.bert.embeddings.word_embeddings.weight``) so SR trains it.
        other keywords: as ``tnops.mlm_loss``.
    Shapes:
        forward(logits ``[*, V]``, labels ``[*]``) → scalar (``[*]`` with ``reduction="none"``).
    """

    def __init__(self, synonyms=None, *, prediction: str = "argmax", temperature: float = 1.0,
                 disallow_correct: bool = False, sr_weight: float = 0.0, sr_embedding: torch.Tensor | None = None,
                 ignore_index: int = -100, reduction: str = "mean", backend: str | None = None):
        super().__init__(synonyms, backend, prediction=prediction, temperature=temperature,
                         disallow_correct=disallow_correct, sr_weight=sr_weight, ignore_index=ignore_index,
                         reduction=reduction)
        self.sr_embedding = sr_embedding

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.last_output = functional.mlm_loss(logits, labels, sr_embedding=self.sr_embedding, **self._keywords())
        return self.last_output.loss


class LinearMLMLoss(_MLMLossModule):
    """Module form of ``tnops.linear_mlm_loss``: LM head + MLM loss without ``[N, V]`` logits.

    Args:
        synonyms: ``tnops.SynonymTable`` or None; other keywords as ``tnops.linear_mlm_loss``.
    Shapes:
        forward(hidden ``[*, E]``, weight ``[V, E]``, labels ``[*]``, bias ``[V]`` or None, sr_embedding
        ``[V, E']`` or None, seed int or None) → ``MLMLossOutput``.
    """

    def __init__(self, synonyms=None, *, prediction: str = "argmax", temperature: float = 1.0,
                 disallow_correct: bool = False, sr_weight: float = 0.0, ignore_index: int = -100,
                 reduction: str = "mean", backend: str | None = None):
        super().__init__(synonyms, backend, prediction=prediction, temperature=temperature,
                         disallow_correct=disallow_correct, sr_weight=sr_weight, ignore_index=ignore_index,
                         reduction=reduction)

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                bias: torch.Tensor | None = None, sr_embedding: torch.Tensor | None = None,
                seed: int | None = None) -> MLMLossOutput:
        keywords = dict(self._keywords(), seed=seed)
        self.last_output = functional.linear_mlm_loss(hidden, weight, labels, bias=bias, sr_embedding=sr_embedding,
                                                      **keywords)
        return self.last_output
