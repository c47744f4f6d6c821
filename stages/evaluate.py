"""Evaluate stage: test loss and accuracy, per-class precision/recall/F1, and the confusion matrix.

The scores are computed with NumPy from the model's predicted probabilities on the test split;
the confusion data is one (actual, predicted) row per test image, as DVC's `confusion` plot
template expects.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.atomic import atomic_file
from stages.cli import StageError, run_stage, writing
from stages.dataset import CLASS_NAMES, load_split

PREDICT_BATCH_SIZE = 1000
DECIMALS = 6
PROBABILITY_FLOOR = 1e-7  # the clip Keras applies in its cross-entropy
CONFUSION_ROW_BYTES = 2 * max(map(len, CLASS_NAMES)) + 2  # "actual,predicted\n" at its longest


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


def _write_outputs(directory: Path, metrics: dict[str, object], labels: np.ndarray, predictions: np.ndarray) -> None:
    """Each file is its own DVC output (metrics in git, confusion data cached): publish each atomically.

    Both are written before either is published, so a failure (a full disk) leaves neither.
    """
    with atomic_file(directory / "metrics.json") as metrics_file, atomic_file(directory / "confusion.csv") as confusion:
        metrics_file.write_text(json.dumps({"test": metrics}, indent=2) + "\n", encoding="utf-8")
        with open(confusion, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["actual", "predicted"])
            writer.writerows(
                (CLASS_NAMES[a], CLASS_NAMES[p]) for a, p in zip(labels.tolist(), predictions.tolist(), strict=True)
            )


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="directory with test.npz")
    parser.add_argument("model", type=Path, help="the trained .keras model")
    parser.add_argument("output", type=Path, help="directory for metrics.json and confusion.csv")
    args = parser.parse_args(argv)
    test = load_split(args.prepared, "test")
    if not args.model.is_file():
        raise StageError(f"{args.model}: missing (run the train stage first: 'dvc repro train')")

    from stages.runtime import configure_tensorflow, keras

    configure_tensorflow(seed=0)
    model = keras.saving.load_model(args.model)
    probabilities = model.predict(test.images, batch_size=PREDICT_BATCH_SIZE, verbose=0)
    metrics = score(probabilities, test.labels, CLASS_NAMES)
    with writing("the evaluation reports", args.output, len(test.labels) * CONFUSION_ROW_BYTES):
        _write_outputs(args.output, metrics, test.labels, probabilities.argmax(axis=1))
    summary = ", ".join(f"{name} {metrics[name]:.4f}" for name in ("accuracy", "loss", "macro_f1"))
    print(f"evaluate: test {summary}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("evaluate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
