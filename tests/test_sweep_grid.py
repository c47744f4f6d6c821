"""Sweep grids: DVC's `-S` syntax, exact ranges, deterministic names, and bad values refused up front."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT, tool_env

from fmnist.sweep.grid import GridError, grid_points, validate_points

PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def values(override: str) -> list[str]:
    return [text for point in grid_points([override]) for _, text in point.overrides]


def test_lists_and_ranges_give_the_values_a_user_expects() -> None:
    assert values("train.dropout=0.0,0.1,0.2") == ["0.0", "0.1", "0.2"]
    assert values("train.dropout=range(0.1,0.4,0.1)") == ["0.1", "0.2", "0.3"]  # DVC's queue: 0.30000000000000004, 0.4
    assert values("train.dropout=range(0.50,0.1,-0.20)") == ["0.50", "0.30"]
    assert values("train.seed=range(1,4)") == ["1", "2", "3"]
    assert values("train.hidden_units=[200,100],[50]") == ["[200,100]", "[50]"]


def test_the_grid_is_the_product_in_the_order_given() -> None:
    points = grid_points(["train.dropout=0.1,0.2", "train.seed=1,2,3"])
    assert [point.label() for point in points[:4]] == [
        "train.dropout=0.1 train.seed=1", "train.dropout=0.1 train.seed=2",
        "train.dropout=0.1 train.seed=3", "train.dropout=0.2 train.seed=1",
    ]  # fmt: skip
    assert points[0].set_params == ["train.dropout=0.1", "train.seed=1"]
    assert points[-1].params == {"train.dropout": 0.2, "train.seed": 3}


def test_names_depend_on_the_params_only_and_are_the_same_in_another_process() -> None:
    names = [point.name for point in grid_points(["train.dropout=0.1,0.2", "train.seed=1,2"])]
    assert len(set(names)) == 4 and names[0].startswith("sweep-dropout0.1-seed1-")
    assert grid_points(["train.dropout=0.10", "train.seed=1"])[0].name == names[0]  # 0.10 is 0.1
    code = "from fmnist.sweep.grid import grid_points; print(grid_points(['train.dropout=0.1','train.seed=1'])[0].name)"
    elsewhere = subprocess.run([sys.executable, "-c", code], env=tool_env(), capture_output=True, text=True, check=True)
    assert elsewhere.stdout.strip() == names[0]  # no hash randomisation, no clock, no host in it


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.dropout=range(0.1,,)"], "'train.dropout=range(0.1,,)': not a valid -S value"),
        (["train.dropout=range(0.1,0.3,0)"], "'train.dropout=range(0.1,0.3,0)': range() step must not be 0"),
        (["train.dropout=range(0.3,0.1)"], "'train.dropout=range(0.3,0.1)': gives no values"),
        (["train.dropuot=0.1"], "'train.dropuot' is not a key of params.yaml"),
        (["train.dropout=0.1,1.5"], "-S train.dropout=1.5: 'train.dropout' must be in [0, 1), got 1.5"),
        (["train.epochs=two"], "-S train.epochs=two: 'train.epochs' must be int, got 'two'"),
        (["train.seed=1", "train.seed=2"], "key 'train.seed' is given by more than one -S"),
        ([], "no grid: give at least one -S key=value"),
    ],
)
def test_a_bad_grid_is_one_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(GridError) as error:
        validate_points(PARAMS, grid_points(overrides))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
