"""Fetch stage: the four original Fashion-MNIST IDX files, checksum-verified, stored decompressed.

Where they come from and how they are verified: `fmnist.sources`; the checksums are `fetch.sha256` in params.yaml.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fmnist.atomic import atomic_directory
from fmnist.errors import writing
from fmnist.params import load_params
from fmnist.runner import run_stage
from fmnist.sources import FetchParams, fetch_dataset


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="directory to write the decompressed IDX files to")
    args = parser.parse_args(argv)
    params = load_params(FetchParams)
    files = fetch_dataset(params.sources, params.sha256)
    size = sum(len(data) for data in files.values())
    with writing("the raw files", args.output, size), atomic_directory(args.output) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)
    print(f"fetch: wrote {len(files)} verified files to {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("fetch", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
