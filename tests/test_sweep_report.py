"""The sweep report's arithmetic on `dvc.api.exp_show()` rows: float noise, seeds, grid points, the pick."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from fmnist.sweep.report import SweepError, choose, dropout_effects, param_defaults, sweep_rows, write_report

PARAMS = param_defaults(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))


def experiment(name: str, dropout: float, seed: int, validation: float, test: float, **params: object) -> dict:
    """One exp_show row; `train.accuracy` is a metric that shares the params' `train.` prefix."""
    row = {"Experiment": name, "typ": "branch_commit", "train.dropout": dropout, "train.seed": seed,
           "train.hidden_units": [200, 100, 60], "train.accuracy": validation - 0.01,
           "validation.accuracy": validation, "validation.loss": 1 - validation, "test.accuracy": test}  # fmt: skip
    return row | {f"train.{key}": value for key, value in params.items()}


def test_integer_params_come_back_as_integers() -> None:
    """dvc.api.exp_show gives every number as a float: 90 epochs would show as 90.0."""
    rows = [experiment("a", 0.1, 1, 0.8, 0.7, epochs=90.0), experiment("b", 0.1, 1, 0.8, 0.7, epochs=30.0)]
    rows.append(experiment("c", 0.1, 1, 0.8, 0.7, epochs=30.0, hidden_units="[50, 20]"))  # a list, as its text
    columns, table = sweep_rows(rows, PARAMS)
    assert columns == ["dropout", "epochs", "hidden_units"]
    assert [(row["epochs"], type(row["epochs"]), row["hidden_units"]) for row in table] == [
        (30, int, [50, 20]), (30, int, [200, 100, 60]), (90, int, [200, 100, 60])
    ]  # fmt: skip


def test_float_noise_from_a_range_is_one_rate() -> None:
    rows = [experiment("a", 0.3, 1, 0.8, 0.7), experiment("b", 0.30000000000000004, 1, 0.8, 0.7)]
    columns, table = sweep_rows(rows, PARAMS)
    assert columns == ["dropout"]
    assert [(row["dropout"], row["seeds"], row["experiment"]) for row in table] == [(0.3, 1, "a")]


def test_seeds_are_averaged_and_the_pick_uses_the_validation_mean_only() -> None:
    rows = [
        experiment("a1", 0.1, 1, 0.80, 0.90), experiment("a2", 0.1, 2, 0.82, 0.90),
        experiment("b1", 0.2, 1, 0.83, 0.70), experiment("b2", 0.2, 2, 0.83, 0.70),
        experiment("w1", 0.1, 1, 0.70, 0.70, hidden_units=[50]),
        experiment("w2", 0.1, 2, 0.72, 0.70, hidden_units=[50]),
        {"Experiment": "baseline", "typ": "baseline", "validation.accuracy": 0.99, "train.dropout": 0.9},
    ]  # fmt: skip
    columns, table = sweep_rows(rows, PARAMS)
    assert columns == ["dropout", "hidden_units"]
    summary = [(row["hidden_units"], row["dropout"], row["seeds"], round(row["validation_accuracy"], 4),
                round(row["validation_accuracy_std"], 4), row["experiment"]) for row in table]  # fmt: skip
    assert summary == [
        ([50], 0.1, 2, 0.71, 0.0141, "w1 w2"),
        ([200, 100, 60], 0.1, 2, 0.81, 0.0141, "a1 a2"),
        ([200, 100, 60], 0.2, 2, 0.83, 0.0, "b1 b2"),
    ]
    assert choose(table)["experiment"] == "b1 b2"  # best validation mean, although its test accuracy is lower


def test_two_runs_of_one_point_that_disagree_are_an_error() -> None:
    with pytest.raises(SweepError, match=r"two experiments with train.dropout=0.1, train.seed=1 disagree \(a, b\)"):
        sweep_rows([experiment("a", 0.1, 1, 0.8, 0.7), experiment("b", 0.1, 1, 0.9, 0.7)], PARAMS)


def test_no_finished_experiment_is_an_error() -> None:
    with pytest.raises(SweepError, match="no finished experiments"):
        sweep_rows([{"Experiment": "x", "typ": "branch_commit", "validation.accuracy": None}], PARAMS)


WIDTHS = [  # two widths: the wide one's best rate is higher; its test accuracy is what the report shows
    experiment("n0", 0.0, 1, 0.80, 0.79), experiment("n0b", 0.0, 2, 0.82, 0.81),
    experiment("n2", 0.2, 1, 0.84, 0.83), experiment("n2b", 0.2, 2, 0.84, 0.85),
    experiment("w0", 0.0, 1, 0.81, 0.80, hidden_units=[500]), experiment("w0b", 0.0, 2, 0.81, 0.80, hidden_units=[500]),
    experiment("w4", 0.4, 1, 0.87, 0.86, hidden_units=[500]), experiment("w4b", 0.4, 2, 0.89, 0.88, hidden_units=[500]),
    experiment("w2", 0.2, 1, 0.86, 0.99, hidden_units=[500]), experiment("w2b", 0.2, 2, 0.86, 0.99, hidden_units=[500]),
]  # fmt: skip


def test_dropout_effect_per_width_compares_the_best_rate_above_0_with_rate_0_on_validation() -> None:
    columns, table = sweep_rows(WIDTHS, PARAMS)
    narrow, wide = dropout_effects(table, columns)
    assert (narrow["series"], narrow["best_dropout"]) == ("hidden_units=[200, 100, 60]", 0.2)
    assert narrow["change_validation_accuracy"] == pytest.approx(0.03)
    assert "best_test_accuracy" not in narrow  # test accuracy only on the chosen point's line
    assert (wide["series"], wide["best_dropout"]) == ("hidden_units=[500]", 0.4)
    assert wide["change_validation_accuracy"] == pytest.approx(0.07)
    assert wide["best_test_accuracy"] == pytest.approx(0.87) and wide["no_dropout_test_accuracy"] == pytest.approx(0.8)
    assert wide["best_test_accuracy_std"] == pytest.approx(0.0141, abs=1e-4)


def test_the_report_shows_test_accuracy_for_the_chosen_point_only(tmp_path: Path) -> None:
    columns, table = sweep_rows(WIDTHS, PARAMS)
    chosen = write_report(table, columns, tmp_path)
    assert chosen["experiment"] == "w4 w4b"  # not w2, whose test accuracy is higher
    rows = list(csv.DictReader((tmp_path / "dropout.csv").read_text().splitlines()))
    assert list(rows[0]) == [
        "dropout", "hidden_units", "series", "seeds", "validation_accuracy", "validation_accuracy_std",
        "validation_loss", "validation_loss_std", "experiment",
    ]  # fmt: skip
    assert [(row["hidden_units"], row["dropout"]) for row in rows][:2] == [
        ("[200, 100, 60]", "0.0"),
        ("[200, 100, 60]", "0.2"),
    ]
    choice = json.loads((tmp_path / "choice.json").read_text())
    assert choice["test_accuracy"] == pytest.approx(0.87) and len(choice["dropout_effect"]) == 2
    plot = (tmp_path / "sweep.svg").read_text()
    assert plot.count("<polyline") == 2 and plot.count('r="8"') == 1  # a line per width; the chosen point ringed
    assert "its test accuracy 0.8700 ± 0.0141" in plot and "0.99" not in plot


def test_dropout_effect_is_negative_where_no_rate_above_0_beats_rate_0() -> None:
    rows = [
        experiment("z", 0.0, 1, 0.90, 0.89),
        experiment("a", 0.1, 1, 0.88, 0.87),
        experiment("b", 0.3, 1, 0.85, 0.8),
    ]
    columns, table = sweep_rows(rows, PARAMS)
    (effect,) = dropout_effects(table, columns)
    assert choose(table)["dropout"] == 0.0
    assert effect["best_dropout"] == 0.1 and effect["change_validation_accuracy"] == pytest.approx(-0.02)
    assert (effect["best_test_accuracy"], effect["no_dropout_test_accuracy"]) == (0.87, 0.89)
