"""Evaluate stage: test loss and accuracy, per-class precision/recall/F1, and the confusion matrix.

The scores are computed with NumPy from the model's predicted probabilities on the test split (`fmnist.scores`);
the confusion data is one (actual, predicted) row per test image, as DVC's `confusion` plot template expects.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmnist.atomic import atomic_file
from fmnist.dataset import CLASS_NAMES, load_split
from fmnist.errors import writing
from fmnist.keras_archive import load_model
from fmnist.runner import run_stage
from fmnist.scores import predicted_probabilities, score

CONFUSION_ROW_BYTES = 2 * max(map(len, CLASS_NAMES)) + 2  # "actual,predicted\n" at its longest


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

    from fmnist.tensorflow_setup import configure_tensorflow

    configure_tensorflow(seed=0)
    model = load_model(args.model)
    probabilities = predicted_probabilities(model, test.images)
    metrics = score(probabilities, test.labels, CLASS_NAMES)
    with writing("the evaluation reports", args.output, len(test.labels) * CONFUSION_ROW_BYTES):
        _write_outputs(args.output, metrics, test.labels, probabilities.argmax(axis=1))
    summary = ", ".join(f"{name} {metrics[name]:.4f}" for name in ("accuracy", "loss", "macro_f1"))
    print(f"evaluate: test {summary}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("evaluate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
