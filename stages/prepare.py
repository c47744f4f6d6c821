"""Prepare stage: parse the IDX files, scale pixels to [0, 1], split train/validation/test.

The validation split is carved out of the training images (stratified by class, seeded) and is never trained
on; the test images stay the test set (`fmnist.splits`). Output format: `fmnist.dataset`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fmnist.atomic import atomic_directory
from fmnist.dataset import Split, save_split
from fmnist.errors import StageError, writing
from fmnist.idx import RAW_FILES, decode_split
from fmnist.params import load_params
from fmnist.runner import run_stage
from fmnist.splits import PrepareParams, prepare_splits


def _read_raw(directory: Path, names: tuple[str, str]) -> Split:
    try:
        return decode_split(*(Path(directory, name).read_bytes() for name in names), names)
    except FileNotFoundError as error:
        raise StageError(f"{error.filename}: missing (run the fetch stage first: 'dvc repro fetch')") from None


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="directory with the four IDX files")
    parser.add_argument("output", type=Path, help="directory to write train/validation/test .npz to")
    args = parser.parse_args(argv)
    params = load_params(PrepareParams)
    splits = prepare_splits(_read_raw(args.raw, RAW_FILES["train"]), _read_raw(args.raw, RAW_FILES["test"]), params)
    size = sum(split.images.nbytes + split.labels.nbytes for split in splits.values())
    with writing("the prepared splits", args.output, size), atomic_directory(args.output) as staging:
        for name, split in splits.items():
            save_split(staging / f"{name}.npz", split)
    sizes = ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items())
    print(f"prepare: wrote {sizes} images to {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("prepare", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
