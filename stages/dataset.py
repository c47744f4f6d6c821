"""The prepared-data contract between prepare, train and evaluate: one `.npz` per split.

Each file holds float32 `images` of shape (n, 28, 28) scaled to [0, 1] and uint8 `labels` 0-9,
written with fixed zip timestamps so that equal arrays give equal bytes (and equal DVC hashes).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class Split(NamedTuple):
    images: np.ndarray
    labels: np.ndarray


def save_split(path: Path, split: Split) -> None:
    """Like `np.savez`, but with fixed entry timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in split._asdict().items():
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def load_split(directory: Path, name: str) -> Split:
    """Read `<directory>/<name>.npz` as written by `save_split`."""
    with np.load(directory / f"{name}.npz", allow_pickle=False) as arrays:
        return Split(arrays["images"], arrays["labels"])
