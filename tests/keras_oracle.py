"""The oracle of tests/test_train.py: training as the train stage did before its compiled loop, with Keras's `fit`.

bench/levers.py measures the same way of training as its reference row; the tests keep their own copy, so that
they never import the benchmark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmnist.dataset import Split
    from fmnist.tensorflow_setup import keras
    from fmnist.train_params import TrainParams


def keras_fit(
    model: keras.Model, train: Split, validation: Split, params: TrainParams, validation_batch_size: int
) -> list[dict[str, float]]:
    """Train as the stage did before its compiled loop: `fit` once per epoch on the shuffled arrays."""
    from fmnist.training import epoch_order

    history = []
    for epoch in range(params.epochs):
        order = epoch_order(params.seed, epoch, len(train.labels))
        result = model.fit(
            train.images[order],
            train.labels[order],
            batch_size=params.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            validation_data=tuple(validation),
            validation_batch_size=validation_batch_size,
            verbose=0,
        )
        history.append({name: float(values[-1]) for name, values in result.history.items()})
    return history
