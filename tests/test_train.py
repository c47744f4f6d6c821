"""Train: the seed article's network, deterministic training, and model files with stable bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from keras_oracle import keras_fit

from fmnist.dataset import Split, normalise, pixels_of
from fmnist.keras_archive import save_model
from fmnist.model import build_model
from fmnist.tensorflow_setup import configure_tensorflow, keras
from fmnist.train_params import TrainParams, learning_rate_at
from fmnist.training import VALIDATION_BATCH_SIZE, epoch_order, train_model

# Threads can only be set before TensorFlow's first op, as in the stage; seeds are reset per test.
configure_tensorflow(seed=0)
PARAMS = TrainParams(hidden_units=(200, 100, 60), dropout=0.2, learning_rate=0.01, batch_size=32, epochs=2, seed=7)


def tiny_data(count: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.random((count, 28, 28), dtype=np.float32), rng.integers(0, 10, count).astype(np.uint8))


def trained_weights(params: TrainParams) -> tuple[list[np.ndarray], list[dict[str, float]]]:
    configure_tensorflow(params.seed)
    model = build_model(params)
    history = train_model(model, tiny_data(96, 1), tiny_data(32, 2), params)
    return [weight.copy() for weight in model.get_weights()], history


def test_model_is_784_dropout_200_100_60_dropout_softmax_10() -> None:
    model = build_model(PARAMS)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Flatten"] + ["Dropout", "Dense"] * 4
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [200, 100, 60, 10]
    assert [layer.activation.__name__ for layer in dense] == ["relu"] * 3 + ["softmax"]
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.rate for layer in dropouts] == [0.2] * 4
    assert model.input_shape == (None, 28, 28)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.01)


def test_hidden_units_and_dropout_come_from_params() -> None:
    model = build_model(dataclasses.replace(PARAMS, hidden_units=(16,), dropout=0.5))
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [16, 10]
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.5, 0.5]


def test_a_constant_schedule_keeps_the_rate_and_cosine_anneals_it_towards_zero() -> None:
    constant, cosine = PARAMS, dataclasses.replace(PARAMS, epochs=4, lr_schedule="cosine")
    assert [learning_rate_at(constant, epoch) for epoch in range(2)] == [0.01, 0.01]
    rates = [learning_rate_at(cosine, epoch) for epoch in range(4)]
    assert rates[0] == 0.01
    assert rates[2] == pytest.approx(0.005)
    assert rates == sorted(rates, reverse=True)
    assert 0.0 < rates[-1] < 0.002


def test_momentum_and_schedule_change_training_and_the_optimizer_ends_at_the_last_epochs_rate() -> None:
    tuned = dataclasses.replace(PARAMS, epochs=3, momentum=0.9, lr_schedule="cosine")
    configure_tensorflow(tuned.seed)
    model = build_model(tuned)
    train_model(model, tiny_data(96, 1), tiny_data(32, 2), tuned)
    assert model.optimizer.momentum == 0.9
    assert model.optimizer.learning_rate.numpy() == pytest.approx(learning_rate_at(tuned, 2))
    plain_weights, _ = trained_weights(dataclasses.replace(tuned, momentum=0.0, lr_schedule="constant"))
    assert not np.array_equal(model.get_weights()[0], plain_weights[0])


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    assert sorted(epoch_order(1, 0, 50)) == list(range(50))
    assert np.array_equal(epoch_order(1, 3, 50), epoch_order(1, 3, 50))
    assert not np.array_equal(epoch_order(1, 3, 50), epoch_order(1, 4, 50))


def test_training_is_deterministic_and_reports_each_epoch() -> None:
    first_weights, history = trained_weights(PARAMS)
    second_weights, _ = trained_weights(PARAMS)
    assert len(history) == 2
    assert set(history[0]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.array_equal(a, b) for a, b in zip(first_weights, second_weights, strict=True))
    other_seed, _ = trained_weights(dataclasses.replace(PARAMS, seed=8))
    assert not np.array_equal(first_weights[0], other_seed[0])


def as_pixels(split: Split) -> Split:
    """`split` with images as `load_split(..., as_pixels=True)` gives them, as the train stage loads them."""
    return Split(pixels_of(split.images), split.labels)


@pytest.mark.parametrize("held_as", [lambda split: split, as_pixels], ids=["float32", "pixels"])
def test_training_is_keras_fit_on_the_shuffled_arrays_bit_for_bit(held_as: Callable[[Split], Split]) -> None:
    """The stage's compiled loop changes how batches reach Keras's train_step, not the math."""
    rng = np.random.default_rng(1)
    train, validation = (  # 100 = 3 batches of 32 and one of 4; 100 * 784 values cover all 256 pixels
        Split(normalise(rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)), tiny_data(count, 2).labels)
        for count in (100, 30)
    )
    configure_tensorflow(PARAMS.seed)
    ours = build_model(PARAMS)
    history = train_model(ours, held_as(train), held_as(validation), PARAMS)
    configure_tensorflow(PARAMS.seed)
    reference = build_model(PARAMS)
    expected = keras_fit(reference, train, validation, PARAMS, VALIDATION_BATCH_SIZE)
    assert history == expected
    assert all(np.array_equal(a, b) for a, b in zip(ours.get_weights(), reference.get_weights(), strict=True))
    assert reference.optimizer.iterations.numpy() == ours.optimizer.iterations.numpy() == 2 * 4


def test_saved_model_has_stable_bytes_and_loads_back(tmp_path: Path) -> None:
    configure_tensorflow(PARAMS.seed)
    model = build_model(PARAMS)
    save_model(model, tmp_path / "a.keras")
    save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = keras.saving.load_model(tmp_path / "a.keras")
    images = tiny_data(4, 3).images
    assert np.array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras"]
