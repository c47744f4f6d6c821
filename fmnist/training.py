"""The training loop: Keras's own train and test steps, compiled into one TensorFlow loop per epoch.

Each epoch's batches are gathered from the split in an order that depends on (seed, epoch) only, so that an
interrupted run can replay any epoch; `tests/test_train.py` checks the loop against `keras.Model.fit` bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from fmnist.dataset import PIXEL_LEVELS, Split, aligned
from fmnist.train_params import TrainParams, learning_rate_at

if TYPE_CHECKING:
    from fmnist.tensorflow_setup import keras, tf

VALIDATION_BATCH_SIZE = 1000
Metrics = dict[str, float]


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The shuffle of one epoch, a function of (seed, epoch) only, so any epoch can be replayed."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def tensor_view(array: np.ndarray) -> tf.Tensor:
    """A tensor over `array`'s memory (an aligned copy first if needed), not a copy of it.

    `tf.convert_to_tensor` copies, and held two copies of the training images at once: 330 MiB.
    """
    from fmnist.tensorflow_setup import tf

    return tf.experimental.dlpack.from_dlpack(aligned(array).__dlpack__())


def _compile_steps(step: Callable[[tuple], object], split: Split, batch_size: int) -> Callable[[tf.Tensor], None]:
    """One TensorFlow loop running a Keras step over `split`'s batches, taken in a given order.

    `step` is Keras's own `train_step` or `test_step`, the steps `fit` runs. Gathering each batch
    from the split in the epoch's order gives `fit`'s batches and updates on the shuffled arrays
    bit for bit (tests/test_train.py), without fit's per-call data pipeline and copies of the data.

    The split's images may also be the uint8 pixels of `load_split(..., as_pixels=True)`. Dividing
    them by 255 in the loop gives `normalise`'s floats exactly, as long as the divisor is fed in at
    run time: TensorFlow's graph optimiser rewrites a division by a constant as a multiplication by
    its reciprocal, which is one bit off for 126 of the 256 pixel values.
    """
    from fmnist.tensorflow_setup import tf

    images, labels = tensor_view(split.images), tensor_view(split.labels)
    pixel_levels = tf.constant(float(PIXEL_LEVELS))  # captured: an input of the graph, not a constant in it

    def model_input(batch: tf.Tensor) -> tf.Tensor:
        return tf.cast(batch, tf.float32) / pixel_levels if batch.dtype == tf.uint8 else batch

    @tf.function
    def run(order: tf.Tensor) -> None:
        for start in tf.range(0, tf.size(order), batch_size):
            batch = order[start : start + batch_size]
            step((model_input(tf.gather(images, batch)), tf.gather(labels, batch)))

    return run


def _metrics_after(
    model: keras.Model, run: Callable[[tf.Tensor], None], order: np.ndarray, prefix: str = ""
) -> Metrics:
    """The model's metrics over one `run` in `order`, named as `fit` names them."""
    from fmnist.tensorflow_setup import tf

    model.reset_metrics()
    run(tf.constant(order))
    return {prefix + name: float(value) for name, value in model.get_metrics_result().items()}


def train_model(
    model: keras.Model,
    train: Split,
    validation: Split,
    params: TrainParams,
    on_epoch_end: Callable[[int, Metrics], None] = lambda epoch, metrics: None,
    first_epoch: int = 0,
) -> list[Metrics]:
    """Run epochs `first_epoch`..`params.epochs - 1` of minibatch SGD; returns their metrics."""
    run_epoch = _compile_steps(model.train_step, train, params.batch_size)
    run_validation = _compile_steps(model.test_step, validation, VALIDATION_BATCH_SIZE)
    validation_order = np.arange(len(validation.labels))
    history = []
    for epoch in range(first_epoch, params.epochs):
        if params.lr_schedule != "constant":  # the constant rate is never re-assigned: the seed's arithmetic exactly
            model.optimizer.learning_rate = learning_rate_at(params, epoch)
        metrics = _metrics_after(model, run_epoch, epoch_order(params.seed, epoch, len(train.labels)))
        metrics |= _metrics_after(model, run_validation, validation_order, prefix="val_")
        metrics = dict(sorted(metrics.items()))  # the order `fit` reported them in
        history.append(metrics)
        on_epoch_end(epoch, metrics)
    return history
