"""electra.metrics: hand-computed cases, cross-checks against scipy on random data, and the input errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from electra.metrics import accuracy, average_ranks, binary_auc, f1_binary, matthews, pearson, spearman

scipy_stats = pytest.importorskip("scipy.stats")


# ---- hand-computed cases --------------------------------------------------------------------------------------------

def test_accuracy_by_hand():
    assert accuracy([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    assert accuracy(torch.tensor([7]), np.array([7])) == 1.0


def test_average_ranks_share_the_mean_rank_of_ties():
    # sorted: 10 (rank 1), 20 20 20 (ranks 2,3,4 -> 3), 30 (rank 5)
    assert average_ranks([20, 10, 20, 30, 20]).tolist() == [3.0, 1.0, 3.0, 5.0, 3.0]


def test_auc_by_hand_with_a_tie():
    # positives 0.5, 0.9; negatives 0.1, 0.5. Pairs: 0.5>0.1 (1), 0.5=0.5 (1/2), 0.9>0.1 (1), 0.9>0.5 (1) -> 3.5/4
    assert binary_auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == 0.875
    assert binary_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # sklearn's documented example
    assert binary_auc([3.0, 2.0, 1.0], [0, 1, 1]) == 0.0
    assert binary_auc([1.0, 1.0, 1.0], [0, 1, 1]) == 0.5


def test_spearman_by_hand_with_ties():
    # x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]; centred: [-1.5, 0, 0, 1.5], [-1.5, .5, -.5, 1.5]
    # sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5 -> rho = 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear


def test_pearson_by_hand():
    # dx = [-1, 0, 1], dy = [-7/3, -1/3, 8/3]: sum dx dy = 5, sum dx^2 = 2, sum dy^2 = 114/9
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228), abs=1e-12)


def test_matthews_and_f1_of_a_table_by_hand():
    predictions, labels = [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]
    # TP = 2, FP = 2, FN = 0, TN = 1
    assert matthews(predictions, labels) == pytest.approx((2 * 1 - 2 * 0) / math.sqrt(4 * 2 * 3 * 1), abs=1e-12)
    assert f1_binary(predictions, labels) == pytest.approx(2 * 2 / (2 * 2 + 2 + 0))
    # for class 0: TP' = TN = 1, FP' = FN = 0, FN' = FP = 2 -> 2 / (2 + 0 + 2)
    assert f1_binary(predictions, labels, positive=0) == pytest.approx(0.5)
    # a symmetric table: TP = 3, FP = 1, FN = 1, TN = 3 -> (9 - 1) / sqrt(4^4) = 0.5
    assert matthews([1, 1, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 1, 1, 0]) == pytest.approx(0.5)


def test_matthews_and_f1_on_empty_marginals_are_zero_as_sklearn():
    assert matthews([1, 1, 1], [0, 1, 1]) == 0.0     # predictions hold one class
    assert matthews([0, 1, 1], [1, 1, 1]) == 0.0     # labels hold one class
    assert f1_binary([0, 0], [0, 0]) == 0.0          # no positive anywhere
    assert matthews([1, 0], [1, 0]) == 1.0 and matthews([1, 0], [0, 1]) == -1.0


# ---- cross-checks against scipy -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scipy_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 200
    x = rng.integers(0, 12, n).astype(float)             # many ties
    y = x + rng.normal(0, 4, n).round(0)
    labels = rng.integers(0, 2, n)
    predictions = (rng.random(n) < 0.3 + 0.4 * labels).astype(int)
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y).statistic, abs=1e-12)
    u = scipy_stats.mannwhitneyu(x[labels == 1], x[labels == 0]).statistic
    assert binary_auc(x, labels) == pytest.approx(u / ((labels == 1).sum() * (labels == 0).sum()), abs=1e-12)
    # MCC of two binary vectors is their Pearson (phi) correlation
    assert matthews(predictions, labels) == pytest.approx(scipy_stats.pearsonr(predictions, labels).statistic,
                                                          abs=1e-12)
    tp = ((predictions == 1) & (labels == 1)).sum()
    precision, recall = tp / (predictions == 1).sum(), tp / (labels == 1).sum()
    assert f1_binary(predictions, labels) == pytest.approx(scipy_stats.hmean([precision, recall]), abs=1e-12)
    assert accuracy(torch.from_numpy(predictions), labels.tolist()) == pytest.approx((predictions == labels).mean())


def test_torch_inputs_in_low_precision():
    scores = torch.tensor([0.1, 0.5, 0.5, 0.9], dtype=torch.bfloat16)
    assert binary_auc(scores, torch.tensor([0, 0, 1, 1])) == 0.875
    assert isinstance(spearman(torch.arange(5.0), torch.arange(5)), float)


# ---- errors ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: accuracy([1, 2], [1]), "predictions and labels: expected equal lengths, got 2 and 1"),
    (lambda: accuracy([], []), "predictions: expected a non-empty sequence"),
    (lambda: accuracy([[1, 2]], [[1, 2]]), "predictions: expected a 1-D sequence, got shape (1, 2)"),
    (lambda: spearman([1, 2], [1, float("nan")]), "y: expected finite numbers"),
    (lambda: spearman([3, 3, 3], [1, 2, 3]), "x: the correlation is undefined for a constant input"),
    (lambda: pearson([1, 2, 3], [5, 5, 5]), "y: the correlation is undefined for a constant input"),
    (lambda: spearman([1], [2]), "x: the correlation is undefined"),
    (lambda: binary_auc([0.1, 0.2], [1, 1]), "labels: the AUC needs both classes, got 2 positive and 0 negative"),
    (lambda: binary_auc([0.1, 0.2], [0, 2]), "labels: expected binary values in {0, 1}, found 2"),
    (lambda: matthews([0, 0.5], [0, 1]), "predictions: expected binary values in {0, 1}, found 0.5"),
    (lambda: f1_binary([0, 1], [0, 1], positive=2), "positive: expected 0 or 1, got 2"),
])
def test_value_errors_name_the_argument(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


@pytest.mark.parametrize("value", ["0101", 3, None, ["a", "b"]])
def test_type_errors_name_the_argument(value):
    with pytest.raises(TypeError, match="scores: expected a 1-D sequence"):
        binary_auc(value, [0, 1])
