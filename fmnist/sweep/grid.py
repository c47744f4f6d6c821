"""A sweep grid from DVC's `-S` syntax: its points, a name for each, and validation before anything runs.

`-S key=a,b,c`, `-S 'key=range(start,stop[,step])'` and `-S 'key=choice(a,b)'` take Hydra's override grammar,
as `dvc exp run --queue -S` does. Hydra steps a float range by repeated addition, so DVC's queue gets
`range(0.1,0.4,0.1)` as 0.1, 0.2, 0.30000000000000004 and 0.4; here a range is stepped in decimal arithmetic
with Python's `range` meaning (the stop is excluded), giving 0.1, 0.2, 0.3. Each point's name is derived from
its params only, so every machine gives the same point the same name (DVC's random names are unique only
among one machine's refs).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

import yaml

NAME_PREFIX = "sweep"


class GridError(Exception):
    """A grid the user can fix: reported as one line before anything is submitted."""


FLOAT_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)")  # 1e-5: a float to DVC (YAML 1.2), text to PyYAML


def parsed_value(text: str) -> Any:
    """A value as the stages get it: its YAML meaning, so `0.10` is `0.1` and `[512, 256]` is `[512,256]`."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


def canonical_text(value: Any) -> str:
    """One spelling per value: `0.1`, `[512,256,128]`, `cosine`."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def params_digest(params: Mapping[str, Any]) -> str:
    """8 hex digits of the params as sorted JSON: the same for the same params in any order or spelling."""
    canonical = json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def point_name(params: Mapping[str, Any]) -> str:
    """`sweep-dropout0.1-seed2-1a2b3c4d`: the keys sorted, each value spelled one way, then the params' digest.

    Sweeps before this named a point with its keys in the order of the user's `-S`; the digest (its last part) was
    the same then, so a published point is recognised by it (`published_experiment`)."""
    readable = "-".join(f"{key.rsplit('.', 1)[-1]}{canonical_text(params[key])}" for key in sorted(params))
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", readable).replace("..", "_")[:60]
    return f"{NAME_PREFIX}-{readable}-{params_digest(params)}"


def published_experiment(name: str, experiments: Iterable[str]) -> str | None:
    """The experiment among `experiments` (names, or refs ending in them) that is the point `name`: the same name,
    or a name with the same digest (a point published under the order-dependent names of earlier sweeps)."""
    names = [experiment.rsplit("/", 1)[-1] for experiment in experiments]
    if name in names:
        return name
    digest = name.rsplit("-", 1)[-1]
    same = sorted(other for other in names if other.startswith(f"{NAME_PREFIX}-") and other.endswith(f"-{digest}"))
    return same[0] if same else None


@dataclass(frozen=True)
class Point:
    """One grid point: `(key, value as text)` pairs in the order the user gave the keys (its label keeps that order;
    its params and name do not depend on it)."""

    overrides: tuple[tuple[str, str], ...]

    @property
    def params(self) -> dict[str, Any]:
        return {key: parsed_value(text) for key, text in self.overrides}

    @property
    def set_params(self) -> list[str]:
        """The `-S` arguments that run this point alone."""
        return [f"{key}={text}" for key, text in self.overrides]

    @property
    def name(self) -> str:
        """Readable, a valid git ref name, equal for equal params anywhere (`point_name`)."""
        return point_name(self.params)

    def label(self) -> str:
        return " ".join(f"{key}={text}" for key, text in self.overrides)


def _decimal(text: str, override: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise GridError(f"'{override}': range() takes numbers, got '{text.strip()}'") from None


def decimal_range(arguments: str, override: str) -> list[str]:
    """`start,stop[,step]` stepped exactly: Python's `range` meaning, values with the decimals the user typed."""
    parts = [_decimal(part, override) for part in arguments.split(",")]
    if len(parts) not in (2, 3):
        raise GridError(f"'{override}': range() takes start,stop[,step]")
    start, stop, step = (*parts, Decimal(1))[:3]
    if step == 0:
        raise GridError(f"'{override}': range() step must not be 0")
    count = max(0, int(((stop - start) / step).to_integral_value(rounding=ROUND_CEILING)))
    return [str(start + index * step) for index in range(count)]


def parse_values(override: str) -> tuple[str, list[str]]:
    """`key=…` → (key, the values as text); a syntax error is a GridError naming the override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        (parsed,) = OverridesParser.create().parse_overrides([override])
    except HydraException as error:
        message = str(error).splitlines()[0]
        raise GridError(f"'{override}': not a valid -S value ({message})") from None
    if parsed.is_delete() or parsed.is_add() or parsed.is_force_add() or parsed.key_or_group == "":
        raise GridError(f"'{override}': expected key=value[,value…]")
    key, value_text = override.split("=", 1)
    range_call = re.fullmatch(r"\s*range\((.*)\)\s*", value_text)
    if range_call:
        values = decimal_range(range_call.group(1), override)
    elif parsed.is_sweep_override():
        values = list(parsed.sweep_string_iterator())
    else:
        values = [parsed.get_value_element_as_str()]
    if not values:
        raise GridError(f"'{override}': gives no values")
    return key.strip(), values


def grid_points(overrides: Sequence[str]) -> list[Point]:
    """Every combination of the values of each `-S`, in the order given (the last key varies fastest)."""
    if not overrides:
        raise GridError("no grid: give at least one -S key=value[,value…]")
    axes = [parse_values(override) for override in overrides]
    keys = [key for key, _ in axes]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise GridError(f"key '{duplicated[0]}' is given by more than one -S")
    for (_, texts), override in zip(axes, overrides, strict=True):
        spellings = [canonical_text(parsed_value(text)) for text in texts]
        twice = sorted({text for text in spellings if spellings.count(text) > 1})
        if twice:
            raise GridError(f"'{override}': gives the value {twice[0]} more than once")
    combinations = itertools.product(*(values for _, values in axes))
    return [Point(tuple(zip(keys, values, strict=True))) for values in combinations]


def with_overrides(document: Mapping[str, Any], point: Point) -> dict[str, Any]:
    """A copy of the params document with the point's values set; an unknown key is a GridError."""
    updated = json.loads(json.dumps(document))
    for key, value in point.params.items():
        section, _, name = key.partition(".")
        table = updated.get(section)
        if not isinstance(table, dict) or name not in table:
            raise GridError(f"'{key}' is not a key of params.yaml (see its sections {', '.join(document)})")
        table[name] = value
    return updated


def validate_points(document: Mapping[str, Any], points: Sequence[Point]) -> list[Point]:
    """Parse each point's params with the stages' own dataclasses, so a bad value fails here, not on a worker; the
    points with each whole number given for a float param spelled as a float (`0` as `0.0`: one value, one name)."""
    from fmnist.params import ParamsError, parse_params

    documents = [with_overrides(document, point) for point in points]
    classes = stage_params_classes({key.partition(".")[0] for point in points for key in point.params})
    for point, updated in zip(points, documents, strict=True):
        for params_class in classes:
            try:
                parse_params(params_class, updated, source=f"-S {point.label()}")
            except ParamsError as error:
                raise GridError(str(error)) from None
    floats = {
        f"{params_class.SECTION}.{field}"
        for params_class in classes
        for field, hint in typing.get_type_hints(params_class).items()
        if hint is float
    }
    typed = [Point(tuple((key, _as_float(text) if key in floats else text) for key, text in point.overrides))
             for point in points]  # fmt: skip
    first: dict[str, Point] = {}
    for given, point in zip(points, typed, strict=True):
        if point.name in first:
            raise GridError(f"-S {first[point.name].label()} and -S {given.label()} are one point")
        first[point.name] = given
    return typed


def _as_float(text: str) -> str:
    value = parsed_value(text)
    return str(float(value)) if isinstance(value, int) and not isinstance(value, bool) else text


def stage_params_classes(sections: set[str]) -> list[type]:
    """The params dataclasses of the stages that read `sections` (train's imports TensorFlow: only if needed)."""
    classes = []
    if "fetch" in sections:
        from fmnist.sources import FetchParams

        classes.append(FetchParams)
    if "prepare" in sections:
        from fmnist.splits import PrepareParams

        classes.append(PrepareParams)
    if "train" in sections:
        from fmnist.train_params import TrainParams

        classes.append(TrainParams)
    unknown = sections - {"fetch", "prepare", "train"}
    if unknown:
        raise GridError(f"no stage reads params section '{sorted(unknown)[0]}'")
    return classes
