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
        other keywords: as ``tnops.mlm_loss`` (``label_smoothing`` as ``nn.CrossEntropyLoss``'s).
    Shapes (those of ``nn.CrossEntropyLoss``, class dimension 1):
        forward(logits ``[N, V]``, labels ``[N]``) → scalar (``[N]`` with ``reduction="none"``);
        forward(logits ``[N, V, d1, ...]``, labels ``[N, d1, ...]``) → scalar (``[N, d1, ...]``);
        forward(logits ``[V]``, labels ``[]``) → scalar.  (``tnops.mlm_loss`` itself takes ``[*, V]``.)
    """

    def __init__(self, synonyms=None, *, prediction: str = "argmax", temperature: float = 1.0,
                 disallow_correct: bool = False, sr_weight: float = 0.0, sr_embedding: torch.Tensor | None = None,
                 ignore_index: int = -100, reduction: str = "mean", backend: str | None = None,
                 label_smoothing: float = 0.0, z_loss: float = 0.0):
        super().__init__(synonyms, backend, prediction=prediction, temperature=temperature,
                         disallow_correct=disallow_correct, sr_weight=sr_weight, ignore_index=ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss)
        self.sr_embedding = sr_embedding

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        for name, value in (("logits", logits), ("labels", labels)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if logits.dim() > 2:  # nn.CrossEntropyLoss reads [N, C, d1, ...]: move the classes last for mlm_loss
            expected = (logits.shape[0], *logits.shape[2:])
            if tuple(labels.shape) != expected:
                raise ValueError(f"labels: expected shape {expected} for logits {tuple(logits.shape)} (class dimension "
                                 f"1, as nn.CrossEntropyLoss; flatten to [N, V] and [N] for [*, V] scores), got "
                                 f"{tuple(labels.shape)}")
            logits = logits.movedim(1, -1)
        elif logits.dim() == 1:  # unbatched: logits [V], labels []
            if labels.dim() != 0:
                raise ValueError(f"labels: expected a 0-d tensor for 1-d logits [V], got shape {tuple(labels.shape)}")
            out = functional.mlm_loss(logits[None], labels[None], sr_embedding=self.sr_embedding, **self._keywords())
            self.last_output = out._replace(**{k: getattr(out, k).squeeze(0) for k in out._fields
                                               if getattr(out, k).dim() == 1})
            return self.last_output.loss
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
                 reduction: str = "mean", backend: str | None = None, label_smoothing: float = 0.0,
                 z_loss: float = 0.0):
        super().__init__(synonyms, backend, prediction=prediction, temperature=temperature,
                         disallow_correct=disallow_correct, sr_weight=sr_weight, ignore_index=ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss)

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                bias: torch.Tensor | None = None, sr_embedding: torch.Tensor | None = None,
                seed: int | None = None) -> MLMLossOutput:
        keywords = dict(self._keywords(), seed=seed)
        self.last_output = functional.linear_mlm_loss(hidden, weight, labels, bias=bias, sr_embedding=sr_embedding,
                                                      **keywords)
        return self.last_output
