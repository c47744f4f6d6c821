"""Evaluate: the scores, on probabilities small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist.scores import confusion_matrix, score


def one_hot(predicted: list[int], classes: int = 3, confidence: float = 0.8) -> np.ndarray:
    probabilities = np.full((len(predicted), classes), (1 - confidence) / (classes - 1), dtype=np.float32)
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_confusion_matrix_counts_actual_by_predicted() -> None:
    counts = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_scores_match_a_hand_computation() -> None:
    labels = np.array([0, 0, 1, 2])
    metrics = score(one_hot([0, 1, 1, 1]), labels, ["a", "b", "c"])

    assert metrics["accuracy"] == 0.5
    # Class b: predicted 3 times, right once; recalled 1 of 1.
    assert metrics["per_class"]["b"] == {"precision": pytest.approx(1 / 3, abs=1e-6), "recall": 1.0, "f1": 0.5}
    assert metrics["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3, abs=1e-6)}
    # Class c is never predicted: precision 0 rather than a division by zero.
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3, abs=1e-6)
    expected_loss = -(np.log(0.8) * 2 + np.log(0.1) * 2) / 4
    assert metrics["loss"] == pytest.approx(expected_loss, abs=1e-6)
