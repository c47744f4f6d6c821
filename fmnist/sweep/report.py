"""The sweep report: collect a commit's experiments, average each grid point over its seeds, pick one.

`python -m fmnist.sweep report` pulls the experiments of a commit from the git remote (their refs, as
`dvc exp pull --no-cache` does; metrics are kept in git), groups them by every param that varies except
`train.seed`, and gives each grid point the mean ± standard deviation over its seeds of validation and test
accuracy. The point is picked on the validation mean only. Test accuracy is reported once, for the chosen point
(and, to say how much dropout helps there, for rate 0 beside it), never used to choose. It writes `dropout.csv`
(one row per grid point, validation only), `choice.json` (the pick, its test accuracy, dropout's effect per line)
and `sweep.svg` (validation against the rate, error bars, one line per other setting). Experiments from DVC's own
queue (`dvc exp run --queue -S …`, `dvc queue start`) are reported the same way.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fmnist.atomic import atomic_file

# A report is written beside the committed one, which only an explicit `--output reports/sweep` (or `--publish`)
# replaces: a report of a few local experiments must not overwrite the committed search's by accident.
DEFAULT_OUTPUT = Path("reports/sweep-local")  # git-ignored
PUBLISHED_OUTPUT = Path("reports/sweep")
RATE, SEED, VALIDATION, TEST = "train.dropout", "train.seed", "validation.accuracy", "test.accuracy"
# Validation loss is shown beside the accuracy: dropout can leave accuracy alone and still change the loss.
SCORES = {"validation_accuracy": VALIDATION, "validation_loss": "validation.loss", "test_accuracy": TEST}
SIGNIFICANT_DIGITS = 12  # Hydra's float ranges add 1e-17 noise (0.30000000000000004): equal rates group together


class SweepError(Exception):
    pass


def normalised(value: object, default: object = None) -> object:
    """A param value with float noise rounded away, so that 0.30000000000000004 and 0.3 are one rate; integer and
    list params (by their default in params.yaml) back to int and list: `dvc.api.exp_show` gives every number as a
    float and a list as its text."""
    if isinstance(value, str) and isinstance(default, list):
        value = yaml.safe_load(value)
    if isinstance(value, float) and type(default) is int and value.is_integer():
        return int(value)
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, list):
        return [normalised(item) for item in value]
    return value


def param_defaults(document: Mapping[str, Any]) -> dict[str, Any]:
    """`section.key` of every param in a params.yaml document, with its value there (exp_show also names metrics
    `train.accuracy`: only these keys are params)."""
    return {
        f"{section}.{key}": value
        for section, table in document.items()
        if isinstance(table, dict)
        for key, value in table.items()
    }


def finished_experiments(experiments: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`dvc.api.exp_show()` rows of experiments that finished, params normalised."""
    rows = [
        {key: normalised(value, params[key]) if key in params else value for key, value in row.items()}
        for row in experiments
        if row.get("typ") in ("branch_commit", "branch_base") and row.get(VALIDATION) is not None
    ]
    if not rows:
        raise SweepError("no finished experiments: run the sweep first (see README, 'Experiments')")
    return rows


def grid_keys(rows: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> list[str]:
    """The params that differ between experiments, except the seed: they define a grid point. Dropout first."""
    varying = [key for key in sorted(set(params) - {SEED}) if len({json.dumps(row.get(key)) for row in rows}) > 1]
    return [RATE, *(key for key in varying if key != RATE)]


def sweep_rows(
    experiments: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> tuple[list[str], list[dict[str, Any]]]:
    """(param columns, one row per grid point: its params, the seeds, mean and standard deviation over them)."""
    rows = finished_experiments(experiments, params)
    keys = grid_keys(rows, params)
    columns = [key.removeprefix("train.") for key in keys]
    by_point: dict[str, dict[object, dict[str, Any]]] = {}
    for row in rows:
        runs = by_point.setdefault(json.dumps([row.get(key) for key in keys]), {})
        seen = runs.setdefault(row.get(SEED), row)
        if any(seen[score] != row[score] for score in SCORES.values()):  # equal params, equal scores: deterministic
            point = ", ".join(f"{key}={row.get(key)}" for key in [*keys, SEED])
            raise SweepError(
                f"two experiments with {point} disagree ({seen['Experiment']}, {row['Experiment']}); "
                "'dvc exp remove' one"
            )
    table = []
    for runs in by_point.values():
        first = next(iter(runs.values()))
        entry: dict[str, Any] = {column: first.get(key) for column, key in zip(columns, keys, strict=True)}
        entry["seeds"] = len(runs)
        for column, score in SCORES.items():
            values = [run[score] for run in runs.values()]
            entry[column] = statistics.fmean(values)
            entry[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["experiment"] = " ".join(runs[seed]["Experiment"] for seed in sorted(runs, key=json.dumps))
        table.append(entry)
    return columns, sorted(table, key=lambda entry: [entry[c] for c in (*columns[1:], "dropout")])


def choose(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The grid point with the best mean validation accuracy (on a tie, the first in table order)."""
    return max(rows, key=lambda row: row["validation_accuracy"])


def point_label(row: Mapping[str, Any], params: Sequence[str]) -> str:
    return "  ".join(f"{key} {row[key]:.2f}" if key == "dropout" else f"{key} {json.dumps(row[key])}" for key in params)


def series_label(row: Mapping[str, Any], params: Sequence[str]) -> str:
    """The grid point without its rate, `key=value ...`: the line it belongs to in a plot against the rate."""
    settings = [f"{key}={row[key] if isinstance(row[key], str) else json.dumps(row[key])}" for key in params[1:]]
    return " ".join(settings) or "dropout only"


def score(row: Mapping[str, Any], column: str) -> str:
    return f"{row[column]:.4f} ± {row[f'{column}_std']:.4f}"


def dropout_effects(rows: Sequence[Mapping[str, Any]], params: Sequence[str]) -> list[dict[str, Any]]:
    """Per line of the plot with rate 0 and a rate above 0: its best rate above 0 on validation against rate 0.

    How much dropout helps on that line: each `change_…` is the best rate above 0 minus rate 0, so an accuracy
    change below 0 means dropout hurts. Test accuracy is given for the chosen point's line only: reported after
    the choice, never used for it.
    """
    chosen_series = series_label(choose(rows), params)
    effects = []
    for series in dict.fromkeys(series_label(row, params) for row in rows):
        points = [row for row in rows if series_label(row, params) == series]
        without = [row for row in points if row["dropout"] == 0.0]
        with_dropout = [row for row in points if row["dropout"] > 0.0]
        if not without or not with_dropout:
            continue
        best, zero = choose(with_dropout), without[0]
        effect = {"series": series, "best_dropout": best["dropout"]}
        columns = ("validation_accuracy", "validation_loss", *(("test_accuracy",) if series == chosen_series else ()))
        for column in columns:
            effect |= {
                f"best_{column}": best[column], f"best_{column}_std": best[f"{column}_std"],
                f"no_dropout_{column}": zero[column], f"no_dropout_{column}_std": zero[f"{column}_std"],
                f"change_{column}": best[column] - zero[column],
            }  # fmt: skip
        effects.append(effect)
    return effects


def svg_plot(rows: Sequence[Mapping[str, Any]], params: Sequence[str]) -> str:
    """Mean validation accuracy against the rate, ± one standard deviation over seeds as bars, one line per
    combination of the other params; the chosen point ringed and labelled with its test accuracy."""
    width, height, margin, plot_right = 1120, 420, 60, 560
    chosen = choose(rows)
    rates = [row["dropout"] for row in rows]
    lows = [row["validation_accuracy"] - row["validation_accuracy_std"] for row in rows]
    highs = [row["validation_accuracy"] + row["validation_accuracy_std"] for row in rows]
    x_span, y_span = (max(rates) - min(rates)) or 1.0, (max(highs) - min(lows)) or 0.01

    def x(rate: float) -> float:
        return margin + (rate - min(rates)) / x_span * (plot_right - margin)

    def y(value: float) -> float:
        return height - margin - (value - min(lows)) / y_span * (height - 2 * margin)

    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        series.setdefault(series_label(row, params), []).append(row)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{(margin + plot_right) / 2}" y="{height - 15}" text-anchor="middle">dropout rate</text>',
             f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">'
             "validation accuracy (mean ± std over seeds)</text>"]  # fmt: skip
    for tick in sorted(set(rates)):
        parts.append(f'<text x="{x(tick):.1f}" y="{height - margin + 18}" text-anchor="middle">{tick:g}</text>')
    for step in range(5):
        tick = min(lows) + step / 4 * y_span
        parts.append(f'<text x="{margin - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.3f}</text>')
        parts.append(f'<line x1="{margin}" x2="{plot_right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>')
    for index, (name, points) in enumerate(series.items()):
        colour = colours[index % len(colours)]
        path = " ".join(f"{x(p['dropout']):.1f},{y(p['validation_accuracy']):.1f}" for p in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}"/>')
        for p in points:
            centre, mean, std = x(p["dropout"]), p["validation_accuracy"], p["validation_accuracy_std"]
            bar = f'x1="{centre:.1f}" x2="{centre:.1f}" y1="{y(mean - std):.1f}" y2="{y(mean + std):.1f}"'
            parts.append(f'<line {bar} stroke="{colour}"/>')
            parts.append(f'<circle cx="{centre:.1f}" cy="{y(mean):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{plot_right + 20}" y="{30 + 18 * index}" fill="{colour}">{name}</text>')
    centre_x, centre_y = x(chosen["dropout"]), y(chosen["validation_accuracy"])
    parts.append(f'<circle cx="{centre_x:.1f}" cy="{centre_y:.1f}" r="8" fill="none" stroke="black"/>')
    parts.append(f'<text x="{plot_right + 20}" y="{40 + 18 * len(series)}">ringed: chosen on validation; '
                 f"its test accuracy {score(chosen, 'test_accuracy')}</text>")  # fmt: skip
    return "\n".join([*parts, "</svg>\n"])


def pull_experiments(git_remote: str, rev: str) -> None:
    """Fetch the experiment refs of `rev` from the git remote: what `dvc exp pull --no-cache` does (metrics are in
    git), through git's own transport and SSH setup, as `fmnist.sweep.task` pushes them. None to pull is fine."""
    if subprocess.run(["git", "remote", "get-url", git_remote], capture_output=True).returncode != 0:
        print(f"sweep: no git remote '{git_remote}': reporting local experiments only")
        return
    commit = subprocess.run(["git", "rev-parse", rev], capture_output=True, text=True, check=True).stdout.strip()
    refs = f"refs/exps/{commit[:2]}/{commit[2:]}/*"
    pulled = subprocess.run(["git", "fetch", "-q", git_remote, f"+{refs}:{refs}"], capture_output=True, text=True)
    if pulled.returncode != 0:
        raise SweepError(f"fetching experiments from '{git_remote}' failed: {pulled.stderr.strip().splitlines()[-1]}")


def write_report(rows: Sequence[Mapping[str, Any]], params: Sequence[str], output: Path) -> Mapping[str, Any]:
    """The table (validation only), the choice with its test accuracy, dropout's effect, and the plot."""
    chosen = choose(rows)
    scores = [f"{column}{suffix}" for column in SCORES if column != "test_accuracy" for suffix in ("", "_std")]
    columns = [*params, "series", "seeds", *scores, "experiment"]
    with atomic_file(output / "dropout.csv") as table, open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cells = {key: json.dumps(value) if isinstance(value, list) else value for key, value in row.items()}
            writer.writerow(cells | {"series": series_label(row, params)})
    choice = {"chosen_by": f"mean {VALIDATION} over seeds", **chosen, "dropout_effect": dropout_effects(rows, params)}
    with atomic_file(output / "choice.json") as temporary:
        temporary.write_text(json.dumps(choice, indent=2) + "\n", encoding="utf-8")
    with atomic_file(output / "sweep.svg") as temporary:
        temporary.write_text(svg_plot(rows, params), encoding="utf-8")
    return chosen


def report(args: argparse.Namespace) -> int:
    import dvc.api

    try:
        pull_experiments(args.git_remote, args.rev)
        document = yaml.safe_load(subprocess.run(["git", "show", f"{args.rev}:params.yaml"], capture_output=True,
                                                 text=True, check=True).stdout)  # fmt: skip
        params, rows = sweep_rows(dvc.api.exp_show(revs=[args.rev]), param_defaults(document))
    except SweepError as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 1
    chosen = write_report(rows, params, args.output)
    for row in rows:
        mark = "  <- chosen" if row is chosen else ""
        print(f"{point_label(row, params)}  seeds {row['seeds']}  validation {score(row, 'validation_accuracy')}"
              f" (loss {score(row, 'validation_loss')})"
              f"  {row['experiment']}{mark}")  # fmt: skip
    print(f"sweep: chose {point_label(chosen, params)} on mean validation accuracy "
          f"{score(chosen, 'validation_accuracy')}; its test accuracy {score(chosen, 'test_accuracy')}")  # fmt: skip
    for effect in dropout_effects(rows, params):
        line = (f"dropout at {effect['series']}: best rate above 0 is {effect['best_dropout']:g}, validation "
                f"{effect['change_validation_accuracy']:+.4f} over rate 0")  # fmt: skip
        if "change_test_accuracy" in effect:
            best, without = score(effect, "best_test_accuracy"), score(effect, "no_dropout_test_accuracy")
            line += f"; test {best} against {without} at rate 0"
        print(line)
    print(f"sweep: wrote {args.output}")
    return 0
