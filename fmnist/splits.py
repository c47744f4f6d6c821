"""Prepare's logic: the three normalised splits, validation carved out of the training images by class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fmnist.dataset import CLASS_NAMES, Split, normalise
from fmnist.errors import StageError
from fmnist.params import require

FASHION_MNIST_TRAIN_IMAGES = 60_000


@dataclass(frozen=True)
class PrepareParams:
    SECTION: ClassVar[str] = "prepare"
    val_size: int
    seed: int

    def __post_init__(self) -> None:
        # Checked here, before DVC deletes any output: no dataset of this format has more training images than
        # Fashion-MNIST. A smaller dataset's own size is checked against its data (`stratified_split`).
        require(
            len(CLASS_NAMES) <= self.val_size < FASHION_MNIST_TRAIN_IMAGES,
            "prepare.val_size",
            self.val_size,
            f"in [{len(CLASS_NAMES)}, {FASHION_MNIST_TRAIN_IMAGES})",
        )
        require(self.seed >= 0, "prepare.seed", self.seed, "a non-negative integer")


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
