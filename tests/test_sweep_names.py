"""A point's name is a function of its params alone: any key order, any spelling of a value; and a point published
under the order-dependent names of earlier sweeps is recognised by its digest."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO_ROOT

from fmnist.sweep.grid import GridError, grid_points, published_experiment, validate_points

# The committed search's names (reports/sweep/dropout.csv, docs/search.md): keys in the order its `-S` gave them.
COMMITTED = "sweep-momentum0.9-lr_schedulecosine-hidden_units_512_256_128_-epoc-45769fa9"
COMMITTED_GRID = [
    "train.momentum=0.9", "train.lr_schedule=cosine", "train.hidden_units=[512,256,128]",
    "train.epochs=90", "train.dropout=0.1", "train.seed=1",
]  # fmt: skip


def name(*overrides: str) -> str:
    (point,) = grid_points(list(overrides))
    return point.name


def test_the_order_of_the_keys_does_not_change_the_name() -> None:
    assert name("train.seed=1", "train.dropout=0.1") == name("train.dropout=0.1", "train.seed=1")
    assert name("train.seed=1", "train.dropout=0.1").startswith("sweep-dropout0.1-seed1-")
    assert name(*reversed(COMMITTED_GRID)) == name(*COMMITTED_GRID)


def test_spellings_of_one_value_give_one_name() -> None:
    assert name("train.dropout=0.10") == name("train.dropout=0.1") == name("train.dropout=range(0.10,0.2,0.5)")
    assert name("train.dropout=range(0.50,0.4,-1)") == name("train.dropout=0.5")
    assert name("train.hidden_units=[512, 256,128]") == name("train.hidden_units=[512,256,128]")
    assert name("train.learning_rate=1e-2") == name("train.learning_rate=0.01")


def test_the_digest_is_the_one_the_committed_search_was_published_under() -> None:
    assert name(*COMMITTED_GRID).rsplit("-", 1)[1] == COMMITTED.rsplit("-", 1)[1]
    refs = [f"refs/exps/f1/8db63/{other}" for other in ("sweep-seed1-0b1d2e3f", COMMITTED)]
    assert published_experiment(name(*COMMITTED_GRID), refs) == COMMITTED
    assert published_experiment(name(*COMMITTED_GRID), [name(*COMMITTED_GRID), COMMITTED]) == name(*COMMITTED_GRID)
    assert published_experiment(name("train.seed=2"), refs) is None


def test_a_value_given_twice_in_two_spellings_is_refused() -> None:
    with pytest.raises(GridError, match=r"'train.dropout=0.1,0.10': gives the value 0.1 more than once"):
        grid_points(["train.dropout=0.1,0.10"])


def test_a_whole_number_for_a_float_param_is_that_float() -> None:
    """YAML reads `0` as an int: without the params' own types, `dropout=0` and `dropout=0.0` were two points."""
    document = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())

    def typed(*overrides: str) -> list[tuple[str, list[str]]]:
        return [(point.name, point.set_params) for point in validate_points(document, grid_points(list(overrides)))]

    assert typed("train.dropout=0", "train.epochs=2") == typed("train.dropout=0.0", "train.epochs=2")
    assert typed("train.dropout=0", "train.epochs=2")[0][1] == ["train.dropout=0.0", "train.epochs=2"]  # int stays
    with pytest.raises(GridError, match=r"^-S train.dropout=0 and -S train.dropout=0.0 are one point$"):
        typed("train.dropout=0,0.0")
