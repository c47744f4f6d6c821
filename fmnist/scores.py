"""Test scores from a model's predicted probabilities, computed with NumPy: loss, accuracy, per-class F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fmnist.tensorflow_setup import keras

PREDICT_BATCH_SIZE = 1000
DECIMALS = 6
PROBABILITY_FLOOR = 1e-7  # the clip Keras applies in its cross-entropy


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[actual, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, and 0 where the denominator is 0 (a class never predicted)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def score(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, object]:
    """Test metrics from per-class probabilities (n, classes) and true labels (n,)."""
    predictions = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels].astype(np.float64)
    counts = confusion_matrix(labels, predictions, len(class_names))
    hits = np.diag(counts).astype(np.float64)
    precision = _ratio(hits, counts.sum(axis=0))
    recall = _ratio(hits, counts.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    per_class = {
        name: {"precision": round(p, DECIMALS), "recall": round(r, DECIMALS), "f1": round(f, DECIMALS)}
        for name, p, r, f in zip(class_names, precision.tolist(), recall.tolist(), f1.tolist(), strict=True)
    }
    return {
        "loss": round(float(-np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0)).mean()), DECIMALS),
        "accuracy": round(float((predictions == labels).mean()), DECIMALS),
        "macro_f1": round(float(f1.mean()), DECIMALS),
        "per_class": per_class,
    }


def predicted_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Per-class probabilities (n, classes), in batches big enough to be fast and small enough to stay in cache."""
    return model.predict(images, batch_size=PREDICT_BATCH_SIZE, verbose=0)
