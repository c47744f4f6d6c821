"""Collect a dropout sweep from DVC experiments and pick the rate by validation accuracy.

Run after the sweep's experiments have finished (`dvc exp run --queue -S train.dropout=…`,
`dvc queue start -j 2`). Writes `reports/sweep/dropout.csv` (one row per rate: validation and
test accuracy), which `dvc plots show` draws as "Dropout sweep", and `reports/sweep/choice.json`.
The rate is chosen on validation accuracy only; test accuracy is reported, never used to choose.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_OUTPUT = Path("reports/sweep")
RATE, VALIDATION, TEST = "train.dropout", "validation.accuracy", "test.accuracy"
SHARED_PARAMS = ("train.hidden_units", "train.learning_rate", "train.batch_size", "train.epochs", "train.seed")


class SweepError(Exception):
    pass


def sweep_rows(experiments: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """One row per dropout rate from `dvc.api.exp_show()` rows of finished experiments, by rate."""
    finished = [
        row
        for row in experiments
        if row.get("typ") in ("branch_commit", "branch_base") and row.get(VALIDATION) is not None
    ]
    if not finished:
        raise SweepError("no finished experiments: run the sweep first (see README, 'Experiments')")
    for key in SHARED_PARAMS:
        values = {json.dumps(row.get(key)) for row in finished}
        if len(values) > 1:
            raise SweepError(f"experiments differ in '{key}' ({', '.join(sorted(values))}): not one dropout sweep")
    by_rate: dict[float, dict[str, object]] = {}
    for row in finished:
        entry = {"dropout": float(row[RATE]), "validation_accuracy": row[VALIDATION], "test_accuracy": row[TEST]}
        seen = by_rate.setdefault(entry["dropout"], entry | {"experiment": row["Experiment"]})
        if any(seen[key] != entry[key] for key in entry):  # runs are deterministic: equal params, equal scores
            raise SweepError(f"two experiments with {RATE}={entry['dropout']} disagree; 'dvc exp remove' one")
    return [by_rate[rate] for rate in sorted(by_rate)]


def choose(rows: Sequence[Mapping[str, object]]) -> Mapping[str, object]:
    """The row with the best validation accuracy (the lower rate on a tie)."""
    return max(rows, key=lambda row: (row["validation_accuracy"], -row["dropout"]))


def main(argv: Sequence[str] | None = None) -> int:
    from tools import sweep_run

    parser = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help=sweep_run.__doc__.splitlines()[0])
    sweep_run.add_arguments(run)
    report = commands.add_parser("report", help="the table, the pick and reports/sweep/ from the experiments")
    report.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    report.add_argument("--rev", default="HEAD", help="the commit the experiments were run from (default: HEAD)")
    args = parser.parse_args(argv)
    if args.command == "run":
        return sweep_run.main(args)
    import dvc.api

    try:
        rows = sweep_rows(dvc.api.exp_show(revs=[args.rev]))
    except SweepError as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 1
    chosen = choose(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    with open(args.output / "dropout.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["dropout", "validation_accuracy", "test_accuracy", "experiment"])
        writer.writeheader()
        writer.writerows(rows)
    choice = {"chosen_by": VALIDATION, **chosen}
    (args.output / "choice.json").write_text(json.dumps(choice, indent=2) + "\n", encoding="utf-8")
    for row in rows:
        mark = "  <- chosen" if row is chosen else ""
        print(f"dropout {row['dropout']:.2f}  validation {row['validation_accuracy']:.4f}  "
              f"test {row['test_accuracy']:.4f}  {row['experiment']}{mark}")  # fmt: skip
    print(f"sweep: chose dropout {chosen['dropout']} on validation accuracy; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
