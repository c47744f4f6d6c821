"""Resume state: an interrupted run continues to the same weights; a bad state is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_train import PARAMS, tiny_data

from fmnist.model import build_model
from fmnist.resume import load_state, resume_directory, save_state
from fmnist.tensorflow_setup import configure_tensorflow
from fmnist.training import train_model

TRAIN, VALIDATION = tiny_data(96, 1), tiny_data(32, 2)


@pytest.mark.parametrize(
    "knobs", [{}, {"momentum": 0.9, "lr_schedule": "cosine"}], ids=["plain-sgd", "momentum-cosine"]
)
def test_two_epochs_in_two_runs_give_the_weights_of_one_uninterrupted_run(tmp_path: Path, knobs: dict) -> None:
    """With momentum, the optimizer's slots must come back too; with a schedule, the rate of the resumed epoch."""
    params = dataclasses.replace(PARAMS, epochs=3, **knobs)
    configure_tensorflow(params.seed)
    uninterrupted = build_model(params)
    expected_history = train_model(uninterrupted, TRAIN, VALIDATION, params)

    interrupted = build_model(params)
    history = train_model(interrupted, TRAIN, VALIDATION, dataclasses.replace(params, epochs=1))
    save_state(tmp_path, interrupted, history)
    del interrupted

    resumed = build_model(params)
    history = load_state(tmp_path, resumed)
    history += train_model(resumed, TRAIN, VALIDATION, params, first_epoch=len(history))

    assert history == expected_history
    assert all(np.array_equal(a, b) for a, b in zip(resumed.get_weights(), uninterrupted.get_weights(), strict=True))
    assert [path.name for path in sorted(tmp_path.iterdir())] == ["epoch-1.keras", "state.json"]


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda d: (d / "epoch-1.keras").write_bytes(b"0"), "does not match its recorded SHA-256"),
        (lambda d: (d / "epoch-1.keras").unlink(), "No such file"),
        (lambda d: (d / "state.json").write_text('{"weights": "epoch-1.keras"'), "Expecting"),
        (lambda d: (d / "state.json").write_text("{}"), "weights"),
    ],
    ids=["corrupt-weights", "missing-weights", "truncated-state", "empty-state"],
)
def test_a_damaged_state_is_refused(tmp_path: Path, damage, error: str) -> None:
    configure_tensorflow(PARAMS.seed)
    model = build_model(PARAMS)
    save_state(tmp_path, model, [{"loss": 1.0}])
    damage(tmp_path)
    with pytest.raises((OSError, ValueError, KeyError), match=error):
        load_state(tmp_path, build_model(PARAMS))


def test_the_state_directory_changes_with_params_and_input_bytes(tmp_path: Path) -> None:
    data = tmp_path / "train.npz"
    data.write_bytes(b"one")
    base = resume_directory(dataclasses.asdict(PARAMS), [data])
    assert resume_directory(dataclasses.asdict(PARAMS), [data]) == base
    assert resume_directory(dataclasses.asdict(dataclasses.replace(PARAMS, dropout=0.3)), [data]) != base
    data.write_bytes(b"two")
    assert resume_directory(dataclasses.asdict(PARAMS), [data]) != base
