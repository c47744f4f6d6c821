"""The network: the seed article's dropout MLP. Edit `build_model` to try another architecture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fmnist.dataset import CLASS_NAMES
from fmnist.train_params import TrainParams

if TYPE_CHECKING:
    from fmnist.tensorflow_setup import keras


def build_model(params: TrainParams, image_shape: tuple[int, ...] = (28, 28)) -> keras.Model:
    """Flatten, then Dropout before every Dense layer but the output's, as in the seed article.

    Every initializer and dropout layer gets its own seed drawn from `train.seed`, so that a model
    built twice in one process (as when a resume state turns out unusable) starts identical.
    """
    from fmnist.tensorflow_setup import keras  # here, not at the top: bad params fail before TensorFlow loads

    dense_units = [*params.hidden_units, len(CLASS_NAMES)]
    seeds = iter(np.random.SeedSequence(params.seed).generate_state(2 * len(dense_units)).tolist())
    layers = [keras.Input(image_shape), keras.layers.Flatten()]
    for index, units in enumerate(dense_units):
        layers.append(keras.layers.Dropout(params.dropout, seed=next(seeds)))
        layers.append(
            keras.layers.Dense(
                units,
                activation="softmax" if index == len(dense_units) - 1 else "relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
            )
        )
    model = keras.Sequential(layers, name="dropout_mlp")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=params.learning_rate, momentum=params.momentum),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
