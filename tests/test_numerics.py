"""fmnist.numerics: the per-epoch history the slow tier compares, and how it names a difference."""

from __future__ import annotations

from pathlib import Path

from fmnist.numerics import CURVE_FILES, first_difference, read_curves

RECORDED = [
    {"loss": 1.08, "accuracy": 0.60, "val_loss": 0.63, "val_accuracy": 0.75},
    {"loss": 0.70, "accuracy": 0.74, "val_loss": 0.55, "val_accuracy": 0.80},
]


def test_the_first_differing_epoch_and_metric_are_named() -> None:
    assert first_difference(RECORDED, RECORDED) is None
    later = [RECORDED[0], RECORDED[1] | {"val_accuracy": 0.81}]
    assert first_difference(later, RECORDED) == "epoch 2: val_accuracy 0.81 here, 0.8 recorded"
    assert first_difference(RECORDED[:1], RECORDED) == "1 epochs here, 2 recorded"


def test_the_history_is_read_back_from_dvclive_files(tmp_path: Path) -> None:
    for key, name in CURVE_FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        metric = key.removeprefix("val_")
        rows = "".join(f"{step}\t{epoch[key]!r}\n" for step, epoch in enumerate(RECORDED))
        path.write_text(f"step\t{metric}\n{rows}")
    assert read_curves(tmp_path) == RECORDED
