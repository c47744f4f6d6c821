"""The train section of params.yaml, validated: the network, the optimizer and the epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from fmnist.params import require

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainParams:
    SECTION: ClassVar[str] = "train"
    hidden_units: tuple[int, ...]
    dropout: float
    learning_rate: float
    batch_size: int
    epochs: int
    seed: int
    # Defaults are the seed article's plain SGD, for code that builds params by hand; params.yaml must name both.
    momentum: float = 0.0
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        require(len(self.hidden_units) > 0, "train.hidden_units", self.hidden_units, "a non-empty list of layer sizes")
        require(
            all(units > 0 for units in self.hidden_units), "train.hidden_units", self.hidden_units, "positive integers"
        )
        require(0.0 <= self.dropout < 1.0, "train.dropout", self.dropout, "in [0, 1)")
        require(self.learning_rate > 0.0, "train.learning_rate", self.learning_rate, "positive")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "at least 1")
        require(self.epochs >= 1, "train.epochs", self.epochs, "at least 1")
        require(self.seed >= 0, "train.seed", self.seed, "a non-negative integer")
        require(0.0 <= self.momentum < 1.0, "train.momentum", self.momentum, "in [0, 1)")
        require(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule", self.lr_schedule, f"one of {list(LR_SCHEDULES)}")


def learning_rate_at(params: TrainParams, epoch: int) -> float:
    """The learning rate of 0-based `epoch`: constant, or cosine-annealed from `learning_rate` towards 0.

    Set once per epoch (not per step) so that it is a function of the epoch alone, like the shuffle, and a resumed
    run needs nothing more than the epoch it resumes at.
    """
    if params.lr_schedule == "constant":
        return params.learning_rate
    return params.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / params.epochs))
