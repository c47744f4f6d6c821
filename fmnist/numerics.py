"""Does this host compute the committed baseline bit for bit? Its CPU and a fingerprint of its arithmetic.

The stages pin TensorFlow's kernels (fmnist/kernels.py): an AVX2-only Zen 3 host and an AVX-512
Zen 4 host then give the same model bytes. One thing no variable pins: Eigen's matrix products
split long sums into blocks sized from the CPU's L1 data cache, so a CPU with another cache size
may round differently. The fingerprint hashes a short training run of the stage's own network at
its own shapes (batch size, validation batch) on fixed random data: hosts with the same
fingerprint give the committed bytes; `make test-slow` compares exactly only on those, and within
stated tolerances elsewhere (docs/reproducibility.md).

    python -m fmnist.numerics            # this host's CPU and fingerprint
    python -m fmnist.numerics --record   # after `dvc repro` at the defaults: rewrite tests/baseline.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from fmnist.atomic import atomic_file
from fmnist.cpuinfo import describe_host
from fmnist.dataset import Split, normalise
from fmnist.params import load_params

BASELINE = Path("tests/baseline.json")
CURVES = Path("reports/training/plots/metrics")
CURVE_FILES = {  # history key: DVCLive file
    "loss": "train/loss.tsv",
    "accuracy": "train/accuracy.tsv",
    "val_loss": "validation/loss.tsv",
    "val_accuracy": "validation/accuracy.tsv",
}
FINGERPRINT_IMAGES = (320, 1000)  # train: ten steps of the default batch; validation: one batch of 1000


def fingerprint() -> str:
    """SHA-256 of the weights and metrics after one epoch of the stage's training on fixed random data."""
    from fmnist.model import build_model
    from fmnist.tensorflow_setup import configure_tensorflow
    from fmnist.train_params import TrainParams
    from fmnist.training import train_model

    params = dataclasses.replace(load_params(TrainParams), epochs=1)
    rng = np.random.default_rng(0)
    train, validation = (
        Split(normalise(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)), rng.integers(0, 10, count, np.uint8))
        for count in FINGERPRINT_IMAGES
    )
    configure_tensorflow(params.seed)
    model = build_model(params)
    history = train_model(model, train, validation, params)
    digest = hashlib.sha256(json.dumps(history).encode())
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


def read_curves(directory: Path = CURVES) -> list[dict[str, float]]:
    """The per-epoch history the train stage logged (DVCLive's TSVs), as `train_model` returns it."""
    columns = {}
    for key, name in CURVE_FILES.items():
        with open(directory / name, newline="") as handle:
            columns[key] = [float(row[-1]) for row in list(csv.reader(handle, delimiter="\t"))[1:]]
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def first_difference(history: list[dict[str, float]], recorded: list[dict[str, float]]) -> str | None:
    """The first epoch whose metrics differ from the recorded ones, said in one line; None if none does."""
    for epoch, (here, there) in enumerate(zip(history, recorded, strict=False), start=1):
        changed = [
            f"{key} {here.get(key)} here, {value} recorded" for key, value in there.items() if here.get(key) != value
        ]
        if changed:
            return f"epoch {epoch}: " + ", ".join(changed)
    if len(history) != len(recorded):
        return f"{len(history)} epochs here, {len(recorded)} recorded"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmnist.numerics", description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {BASELINE} from this host and {CURVES}")
    args = parser.parse_args(argv)
    host = {"host": describe_host(), "fingerprint": fingerprint()}
    if args.record:
        with atomic_file(BASELINE) as temporary:
            temporary.write_text(json.dumps(host | {"epochs": read_curves()}, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(host))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
