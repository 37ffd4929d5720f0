"""Evaluation metrics on 1-D sequences: accuracy, ROC AUC, Spearman, Pearson, Matthews, binary F1.

Pure functions: each takes two 1-D sequences of one length (lists, tuples, numpy arrays or torch tensors on any
device, in any dtype), validates them before any compute (ValueError/TypeError naming the argument), computes in
float64 numpy and returns a Python float. Nothing here needs scipy or scikit-learn; the tests check against them.

Policy for undefined values: a correlation of a constant input, or an AUC with one class only, is undefined; these
raise ValueError (saying which argument and why) instead of returning nan, so a report never carries a silent nan.
Matthews and F1 follow scikit-learn instead: 0.0 where the formula divides by zero (an empty marginal).
"""
from __future__ import annotations

import math

import numpy as np


def _vector(name: str, values) -> np.ndarray:
    """``values`` as a 1-D float64 numpy array (a torch tensor is detached and moved to the CPU first)."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, without importing torch here
        values = values.detach().cpu()
        if values.dtype.is_floating_point or values.dtype.is_complex:
            values = values.double()
        values = values.numpy()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name}: expected a 1-D sequence of numbers (list, numpy array or torch tensor), "
                        f"got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a 1-D sequence of numbers, got elements that are not numbers") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: expected a non-empty sequence, got 0 elements")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite numbers, found {array[~np.isfinite(array)][0]}")
    return array


def _pair(first: str, a, second: str, b) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector(first, a), _vector(second, b)
    if x.size != y.size:
        raise ValueError(f"{first} and {second}: expected equal lengths, got {x.size} and {y.size}")
    return x, y


def _binary(name: str, array: np.ndarray) -> np.ndarray:
    if not np.isin(array, (0.0, 1.0)).all():
        bad = array[~np.isin(array, (0.0, 1.0))][0]
        raise ValueError(f"{name}: expected binary values in {{0, 1}}, found {bad:g}")
    return array.astype(bool)


def _not_constant(name: str, array: np.ndarray) -> None:
    if array.size < 2 or (array == array[0]).all():
        raise ValueError(f"{name}: the correlation is undefined for a constant input "
                         f"({array.size} value(s), all {array[0]:g})")


def average_ranks(values) -> np.ndarray:
    """1-based ranks of ``values`` (1-D, N) as float64 ``[N]``; tied values share the mean of their ranks."""
    array = _vector("values", values)
    unique, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)                   # the rank of the last member of each group of equal values
    return (last - (counts - 1) / 2.0)[inverse]  # the mean of first..last


def accuracy(predictions, labels) -> float:
    """Share of positions where ``predictions[i] == labels[i]``; both 1-D of one length N >= 1 (any classes)."""
    p, y = _pair("predictions", predictions, "labels", labels)
    return float((p == y).mean())


def binary_auc(scores, labels) -> float:
    """ROC AUC of real ``scores`` [N] against binary ``labels`` [N] (1 = positive), by the rank-sum
    (Mann-Whitney U) formula: the probability that a random positive scores above a random negative, a tie
    counting one half. ValueError when ``labels`` holds only one class (the AUC is undefined)."""
    s, y = _pair("scores", scores, "labels", labels)
    positive = _binary("labels", y)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels: the AUC needs both classes, got {n_pos} positive and {n_neg} negative")
    rank_sum = average_ranks(s)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pearson(x, y) -> float:
    """Pearson correlation of ``x`` [N] and ``y`` [N] (N >= 2); ValueError when either is constant."""
    a, b = _pair("x", x, "y", y)
    _not_constant("x", a)
    _not_constant("y", b)
    a = a - a.mean()
    b = b - b.mean()
    value = float((a * b).sum() / math.sqrt(float((a * a).sum()) * float((b * b).sum())))
    return max(-1.0, min(1.0, value))  # rounding can step just outside [-1, 1]


def spearman(x, y) -> float:
    """Spearman rank correlation of ``x`` [N] and ``y`` [N]: Pearson of their average ranks (ties share the mean
    rank, as scipy.stats.spearmanr). ValueError when either is constant (the correlation is undefined)."""
    a, b = _pair("x", x, "y", y)
    _not_constant("x", a)
    _not_constant("y", b)
    return pearson(average_ranks(a), average_ranks(b))


def _confusion(predictions, labels) -> tuple[int, int, int, int]:
    p, y = _pair("predictions", predictions, "labels", labels)
    p, y = _binary("predictions", p), _binary("labels", y)
    return int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum()), int((~p & ~y).sum())


def matthews(predictions, labels) -> float:
    """Matthews correlation coefficient of binary ``predictions`` [N] against binary ``labels`` [N]:
    (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0.0 when a factor of the denominator is 0, as sklearn."""
    tp, fp, fn, tn = _confusion(predictions, labels)
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denominator == 0:
        return 0.0
    return float((tp * tn - fp * fn) / math.sqrt(denominator))


def f1_binary(predictions, labels, positive: int = 1) -> float:
    """F1 of the class ``positive`` (0 or 1) for binary ``predictions`` [N] against binary ``labels`` [N]:
    2 TP / (2 TP + FP + FN); 0.0 when neither predicts nor holds the positive class, as sklearn."""
    if isinstance(positive, bool) or positive not in (0, 1):
        raise ValueError(f"positive: expected 0 or 1, got {positive!r}")
    tp, fp, fn, tn = _confusion(predictions, labels)
    if positive == 0:
        tp, fp, fn = tn, fn, fp
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else float(2 * tp / denominator)
