"""Parse one section of `params.yaml` into a frozen dataclass, validated before any output is opened.

DVC hashes params but never checks their types or ranges, and it deletes a stage's outputs
before running the stage; so each stage reads its params through `load_params` first.
Each stage's dataclass names its section in `SECTION`; its fields are exactly the keys the
stage reads, and `tests/test_wiring.py` checks them against the stage's params in `dvc.yaml`.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import yaml

from fmnist.errors import StageError

PARAMS_FILE = Path("params.yaml")


class ParamsError(StageError):
    """A missing, mistyped or out-of-range key in the params file."""


class StageParams(Protocol):
    SECTION: ClassVar[str]


ParamsT = TypeVar("ParamsT", bound=StageParams)


def require(condition: bool, key: str, value: Any, expectation: str) -> None:
    """Range checks in `__post_init__` call this so the error names the offending key and value."""
    if not condition:
        shown = list(value) if isinstance(value, tuple) else value  # as written in params.yaml
        raise ValueError(f"'{key}' must be {expectation}, got {shown!r}")


def _convert(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field annotation: int, float, str, tuple[X, ...] or dict[str, X] of those."""
    if typing.get_origin(annotation) is dict:
        item_type = typing.get_args(annotation)[1]
        if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
            raise ValueError(f"'{key}' must be a mapping of names to values, got {value!r}")
        return {name: _convert(f"{key}.{name}", item, item_type) for name, item in value.items()}
    if typing.get_origin(annotation) is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, list):
            raise ValueError(f"'{key}' must be a list, got {value!r}")
        return tuple(_convert(f"{key}[{index}]", item, item_type) for index, item in enumerate(value))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, annotation) or isinstance(value, bool):
        raise ValueError(f"'{key}' must be {annotation.__name__}, got {value!r}")
    return value


def parse_params(cls: type[ParamsT], document: Any, source: str = str(PARAMS_FILE)) -> ParamsT:
    """Build `cls` from a parsed params document, raising ParamsError that names the key."""
    section = cls.SECTION
    table = document.get(section) if isinstance(document, dict) else None
    if not isinstance(table, dict):
        raise ParamsError(f"{source}: missing section '{section}'")
    hints = typing.get_type_hints(cls)
    values = {}
    try:
        for field in dataclasses.fields(cls):
            key = f"{section}.{field.name}"
            if field.name not in table:
                raise ValueError(f"missing key '{key}'")
            values[field.name] = _convert(key, table[field.name], hints[field.name])
        return cls(**values)
    except ValueError as error:
        raise ParamsError(f"{source}: {error}") from None


def load_params(cls: type[ParamsT], path: Path = PARAMS_FILE) -> ParamsT:
    """Read `path` and parse the section of `cls`; every failure is a one-line ParamsError."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ParamsError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}") from None
    return parse_params(cls, document, str(path))
