"""The one options type of the MLM losses, below the public keyword arguments.

``linear_mlm_loss``/``mlm_loss`` build an ``MLMOptions`` from their keywords, the ``nn`` modules keep one,
and backends and the ``tnops::`` custom ops receive one (the ops carry it as plain schema arguments, see
``op_args``/``from_op_args``).  Building one validates every field, so a typo fails where it is written.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from tnops import validation as check


@dataclass(frozen=True)
class MLMOptions:
    """How rows are predicted, corrected and reduced.

    Attributes:
        prediction: ``"argmax"`` (ties → lowest id) or ``"sample"`` (Gumbel-max).
        temperature: divides the logits before sampling (>= 1e-6).
        disallow_correct: the gold token is never predicted.
        sr_weight: weight of soft regularization (0: SR is not computed at all).
        ignore_index: label of rows that are not masked (any int, a vocabulary id included).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        seed: Philox seed in ``[0, 2^64)`` (sampling only); None until a call draws or sets one.
        label_smoothing: ε in ``[0, 1)``: kept rows' CE is ``(1 - ε)·(lse - z_gold) + ε·(lse - mean_v z_v)``.
        z_loss: λ >= 0: ``+ λ·lse²`` on kept rows, reduced like the CE.
    """

    prediction: str = "argmax"
    temperature: float = 1.0
    disallow_correct: bool = False
    sr_weight: float = 0.0
    ignore_index: int = -100
    reduction: str = "mean"
    seed: int | None = None
    label_smoothing: float = 0.0
    z_loss: float = 0.0

    def __post_init__(self) -> None:
        check.mlm_keywords(prediction=self.prediction, temperature=self.temperature,
                           disallow_correct=self.disallow_correct, sr_weight=self.sr_weight,
                           ignore_index=self.ignore_index, reduction=self.reduction,
                           label_smoothing=self.label_smoothing, z_loss=self.z_loss)
        object.__setattr__(self, "seed", check.seed_value(self.seed))
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "sr_weight", float(self.sr_weight))
        object.__setattr__(self, "label_smoothing", float(self.label_smoothing))
        object.__setattr__(self, "z_loss", float(self.z_loss))
        object.__setattr__(self, "ignore_index", int(self.ignore_index))

    def with_seed(self, seed: int) -> MLMOptions:
        return replace(self, seed=seed)

    def row_coefficients(self) -> tuple[float, float, float, float]:
        """``(a, b, c, d)`` of the kept rows' objective ``f = c·nll + (a - c)·lse + (b/2)·lse² - d·zmean``, whose
        logit gradient is ``(a + b·lse)·softmax - c·onehot(gold) - d/V``: the generic form every backend computes
        (``tnops/_ops.py``).  Here ``f = (1 - ε)·nll + ε·(lse - zmean) + λ·lse²``; a new option of this form is a
        change to this method and ``tnops.functional``, never to a backend."""
        eps, lam = self.label_smoothing, self.z_loss
        return 1.0, 2.0 * lam, 1.0 - eps, eps

    def op_args(self) -> tuple[str, float, bool, int]:
        """The row-level fields as the custom ops' schema arguments (the seed travels as a tensor)."""
        return self.prediction, self.temperature, self.disallow_correct, self.ignore_index

    @classmethod
    def from_op_args(cls, prediction: str, temperature: float, disallow_correct: bool, ignore_index: int,
                     seed: int) -> MLMOptions:
        return cls(prediction=prediction, temperature=temperature, disallow_correct=disallow_correct,
                   ignore_index=ignore_index, seed=seed % 2**64)
