"""Check-params stage: every section of params.yaml validated before any stage that reads it runs.

DVC deletes a stage's outputs before running its command, and never checks a param's type or range: with
`train.dropout: 1.5`, train's model and curves were gone before train refused the value. This stage runs first
(fetch, prepare and train depend on its output) and reads every section through the stages' own dataclasses, so a
bad value, or a deleted key, stops `dvc repro` here with one line naming the key and the value, and no other stage's
outputs are touched. Its output never changes (it says what was checked, not the values), so a params change re-runs
only the stages that read the changed key; DVC's run-cache restores this stage like any other.

It also removes the train resume states that are done with (`fmnist.resume_cleanup`): a train run that DVC
restored from the run-cache never ran to remove its own.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from fmnist.atomic import atomic_file
from fmnist.errors import writing
from fmnist.params import load_params
from fmnist.resume_cleanup import clean_states
from fmnist.runner import run_stage
from fmnist.sources import FetchParams
from fmnist.splits import PrepareParams
from fmnist.train_params import TrainParams

CHECKED = [FetchParams.SECTION, PrepareParams.SECTION, TrainParams.SECTION]


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.check_params", description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="file to write once every section is valid")
    args = parser.parse_args(argv)
    load_params(FetchParams)
    load_params(PrepareParams)
    load_params(TrainParams)
    clean_states()
    with writing("the params check", args.output, 4096), atomic_file(args.output) as temporary:
        temporary.write_text(json.dumps({"checked": CHECKED}) + "\n", encoding="utf-8")
    print(f"check_params: {', '.join(CHECKED)} params are valid")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("check_params", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
