"""Params are parsed into frozen dataclasses and rejected, naming the key, before any output opens."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run, run_stage

from fmnist.params import ParamsError, load_params, parse_params
from fmnist.sources import FetchParams
from fmnist.splits import PrepareParams
from fmnist.train_params import TrainParams

DEFAULTS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def with_value(key: str, value: object) -> dict:
    document = copy.deepcopy(DEFAULTS)
    section, name = key.split(".")
    if value is KeyError:
        del document[section][name]
    else:
        document[section][name] = value
    return document


def test_defaults_are_the_seed_articles_network() -> None:
    train = parse_params(TrainParams, DEFAULTS)
    assert train == TrainParams(
        hidden_units=(200, 100, 60),
        dropout=0.2,
        learning_rate=0.01,
        momentum=0.0,
        lr_schedule="constant",
        batch_size=32,
        epochs=60,
        seed=train.seed,
    )
    assert parse_params(PrepareParams, DEFAULTS).val_size == 5000
    assert "/usr/share/datasets/fashion-mnist" in parse_params(FetchParams, DEFAULTS).sources


def test_params_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_params(TrainParams, DEFAULTS).dropout = 0.5  # type: ignore[misc]


def test_an_integer_is_accepted_where_a_float_is_expected() -> None:
    assert parse_params(TrainParams, with_value("train.dropout", 0)).dropout == 0.0


INVALID = [
    (TrainParams, "train.dropout", KeyError, "missing key 'train.dropout'"),
    (TrainParams, "train.dropout", "0.2", "'train.dropout' must be float, got '0.2'"),
    (TrainParams, "train.dropout", 1.0, "'train.dropout' must be in [0, 1), got 1.0"),
    (TrainParams, "train.dropout", -0.1, "'train.dropout' must be in [0, 1), got -0.1"),
    (TrainParams, "train.epochs", 0, "'train.epochs' must be at least 1, got 0"),
    (TrainParams, "train.epochs", 2.5, "'train.epochs' must be int, got 2.5"),
    (TrainParams, "train.epochs", True, "'train.epochs' must be int, got True"),
    (TrainParams, "train.batch_size", 0, "'train.batch_size' must be at least 1, got 0"),
    (TrainParams, "train.learning_rate", 0, "'train.learning_rate' must be positive, got 0.0"),
    (TrainParams, "train.hidden_units", [], "'train.hidden_units' must be a non-empty list of layer sizes, got []"),
    (TrainParams, "train.hidden_units", [200, 0], "'train.hidden_units' must be positive integers, got [200, 0]"),
    (TrainParams, "train.hidden_units", [200, "x"], "'train.hidden_units[1]' must be int, got 'x'"),
    (TrainParams, "train.hidden_units", 200, "'train.hidden_units' must be a list, got 200"),
    (TrainParams, "train.seed", -1, "'train.seed' must be a non-negative integer, got -1"),
    (TrainParams, "train.momentum", 1.0, "'train.momentum' must be in [0, 1), got 1.0"),
    (TrainParams, "train.momentum", KeyError, "missing key 'train.momentum'"),
    (TrainParams, "train.lr_schedule", "step", "'train.lr_schedule' must be one of ['constant', 'cosine'], got 'step'"),
    (TrainParams, "train.lr_schedule", 1, "'train.lr_schedule' must be str, got 1"),
    (PrepareParams, "prepare.val_size", 5, "'prepare.val_size' must be in [10, 60000), got 5"),
    (PrepareParams, "prepare.val_size", 60000, "'prepare.val_size' must be in [10, 60000), got 60000"),
    (PrepareParams, "prepare.seed", -1, "'prepare.seed' must be a non-negative integer, got -1"),
    (PrepareParams, "prepare.seed", None, "'prepare.seed' must be int, got None"),
    (FetchParams, "fetch.sources", [], "'fetch.sources' must be a non-empty list of directories or URLs, got []"),
    (FetchParams, "fetch.sources", [""], "'fetch.sources' must be a list of non-empty strings, got ['']"),
    (FetchParams, "fetch.sha256", ["ab"], "'fetch.sha256' must be a mapping of names to values, got ['ab']"),
    (FetchParams, "fetch.sha256", {"train-images-idx3-ubyte": "0" * 64}, "'fetch.sha256' must be keyed by"),
    (FetchParams, "fetch.sha256", KeyError, "missing key 'fetch.sha256'"),
    (
        FetchParams,
        "fetch.sha256",
        dict.fromkeys(DEFAULTS["fetch"]["sha256"], "abc"),
        "64 lowercase hex digits per file",
    ),
]


@pytest.mark.parametrize(("cls", "key", "value", "message"), INVALID, ids=[f"{k}={v!r}" for _, k, v, _ in INVALID])
def test_invalid_value_is_rejected_naming_the_key_and_value(cls: type, key: str, value: object, message: str) -> None:
    with pytest.raises(ParamsError) as error:
        parse_params(cls, with_value(key, value))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_section_is_named() -> None:
    with pytest.raises(ParamsError, match="missing section 'train'"):
        parse_params(TrainParams, {"prepare": DEFAULTS["prepare"]})


def test_missing_file_and_malformed_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="params.yaml: cannot read"):
        load_params(TrainParams, tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match=r"params.yaml: not valid YAML at line \d"):
        load_params(TrainParams, tmp_path / "params.yaml")


STAGE_OUTPUTS = {
    "fetch": (["data/raw"], "data/raw/train-images-idx3-ubyte"),
    "prepare": (["data/raw", "data/prepared"], "data/prepared/train.npz"),
    "train": (["data/prepared", "models/model.keras", "reports/training"], "models/model.keras"),
}


@pytest.mark.parametrize("stage", STAGE_OUTPUTS)
def test_stage_with_a_bad_param_exits_non_zero_and_leaves_outputs_alone(tmp_path: Path, stage: str) -> None:
    """DVC would run the stage anyway (it never checks types): the stage itself must refuse cleanly."""
    args, output = STAGE_OUTPUTS[stage]
    previous = tmp_path / output
    previous.parent.mkdir(parents=True)
    previous.write_bytes(b"previous good output")
    key = {"fetch": "fetch.sources", "prepare": "prepare.val_size", "train": "train.epochs"}[stage]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_value(key, "three")))

    result = run_stage(stage, *args, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"'{key}'" in result.stderr
    assert previous.read_bytes() == b"previous good output"
    assert sorted(p.name for p in previous.parent.iterdir()) == [previous.name]


def run_listing_imports(module: str, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -m <module> <args>` and list every module it had imported when it exited.

    `sys.modules` at exit, not `python -X importtime`: fmnist.tensorflow_setup silences stderr while TensorFlow loads.
    """
    listing = cwd / "imported-modules.txt"
    code = (
        "import atexit, runpy, sys;"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write(chr(10).join(sys.modules)));"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    result = run([sys.executable, "-c", code, *args], cwd, check=False)
    return result, set(listing.read_text().splitlines())


REJECTED_BEFORE_TENSORFLOW = {  # stage, train.dropout, the error
    "train-bad-param": ("train", 1.5, "'train.dropout' must be in [0, 1), got 1.5"),
    "train-no-inputs": ("train", 0.2, "data/prepared/train.npz: unreadable"),
    "evaluate-no-inputs": ("evaluate", 0.2, "data/prepared/test.npz: unreadable"),
}


@pytest.mark.parametrize("case", REJECTED_BEFORE_TENSORFLOW)
def test_bad_params_and_missing_inputs_are_rejected_before_tensorflow_is_imported(tmp_path: Path, case: str) -> None:
    """Importing TensorFlow takes seconds; a typo in params.yaml should not wait for it."""
    stage, dropout, message = REJECTED_BEFORE_TENSORFLOW[case]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_value("train.dropout", dropout)))
    args = {"train": ["models/model.keras", "reports/training"], "evaluate": ["models/model.keras", "reports"]}[stage]

    result, modules = run_listing_imports(f"stages.{stage}", "data/prepared", *args, cwd=tmp_path)

    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert {"fmnist.errors", "numpy"} <= modules  # the listing is complete
    assert not {"fmnist.tensorflow_setup", "tensorflow", "keras", "dvclive"} & modules
