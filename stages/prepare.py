"""Prepare stage: parse the IDX files, scale pixels to [0, 1], split train/validation/test.

The validation split is carved out of the 60,000 training images (stratified by class, seeded)
and is never trained on; the 10,000 test images stay the test set. Output format: `stages.dataset`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from stages.atomic import atomic_directory
from stages.cli import StageError, run_stage, writing
from stages.dataset import CLASS_NAMES, Split, normalise, save_split
from stages.params import load_params, require

TRAIN_IMAGES = 60_000
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = len(CLASS_NAMES)
IDX_UBYTE = 0x08
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class PrepareParams:
    SECTION: ClassVar[str] = "prepare"
    val_size: int
    seed: int

    def __post_init__(self) -> None:
        require(
            NUM_CLASSES <= self.val_size < TRAIN_IMAGES,
            "prepare.val_size",
            self.val_size,
            f"in [{NUM_CLASSES}, {TRAIN_IMAGES})",
        )
        require(self.seed >= 0, "prepare.seed", self.seed, "a non-negative integer")


class IdxError(StageError):
    """A raw file that is not the IDX array it should be."""


def parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (magic 0x00 0x00 0x08 ndim, big-endian uint32 dims)."""
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxError(f"{name}: truncated header ({len(data)} bytes)")
    if data[:2] != b"\x00\x00" or data[2] != IDX_UBYTE or data[3] != ndim:
        raise IdxError(f"{name}: bad magic number {data[:4].hex()} (expected 000008{ndim:02x})")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header_size + int(np.prod(shape))
    if len(data) != expected:
        raise IdxError(f"{name}: {len(data)} bytes, header {shape} needs {expected}")
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def decode_split(image_bytes: bytes, label_bytes: bytes, names: tuple[str, str]) -> Split:
    """Images and labels of one IDX pair, checked for shape, count and label range."""
    images = parse_idx(image_bytes, names[0], ndim=3)
    labels = parse_idx(label_bytes, names[1], ndim=1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise IdxError(f"{names[0]}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise IdxError(f"{names[0]} has {len(images)} images but {names[1]} has {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise IdxError(f"{names[1]}: label {labels.max()} outside 0..{NUM_CLASSES - 1}")
    return Split(images, labels)


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices; each class gets its share of `val_size` (largest remainder)."""
    if not 0 < val_size < len(labels):
        raise StageError(f"'prepare.val_size' is {val_size}, but there are only {len(labels)} training images")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = val_size * counts / len(labels)
    shares = np.floor(quotas).astype(int)
    remainder_order = np.argsort(-(quotas - shares), kind="stable")
    shares[remainder_order[: val_size - shares.sum()]] += 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.permutation(np.flatnonzero(labels == label))[:share] for label, share in zip(classes, shares, strict=True)
    ]
    validation = np.sort(np.concatenate(picked))
    train = np.setdiff1d(np.arange(len(labels)), validation, assume_unique=True)
    return train, validation


def prepare_splits(train: Split, test: Split, params: PrepareParams) -> dict[str, Split]:
    """The three normalised splits; validation comes out of `train` and is disjoint from it."""
    train_index, validation_index = stratified_split(train.labels, params.val_size, params.seed)
    images = normalise(train.images)
    return {
        "train": Split(images[train_index], train.labels[train_index]),
        "validation": Split(images[validation_index], train.labels[validation_index]),
        "test": Split(normalise(test.images), test.labels.copy()),
    }


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
