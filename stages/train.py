"""Train stage: the dropout MLP on the train split, validated on the validation split each epoch.

Per-epoch loss and accuracy go to DVCLive (curves for `dvc plots`) and one line to the terminal.
After every epoch the run's state is saved (`stages.resume`), so an interrupted run continues
from its last completed epoch and ends with the same weights as an uninterrupted one. The model
is saved in Keras's native `.keras` format with its variable bytes fixed, so the same commit and
params give the same model bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

import stages.resume
from stages.atomic import TEMP_PREFIX, atomic_file, publish
from stages.cli import run_stage, writing
from stages.dataset import CLASS_NAMES, PIXEL_LEVELS, ZIP_EPOCH, Split, aligned, load_split
from stages.params import load_params, require
from stages.resume import STATE_FILE, Metrics, discard_state, load_state, resume_directory, save_state, saved_size

if TYPE_CHECKING:
    from dvclive import Live

    from stages.runtime import keras, tf

VALIDATION_BATCH_SIZE = 1000
FIXED_SAVE_DATE = "1980-01-01@00:00:00"
CURVE_BYTES_PER_EPOCH = 4096  # DVCLive's four .tsv lines and summary, rounded up to a file system block
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


def build_model(params: TrainParams, image_shape: tuple[int, ...] = (28, 28)) -> keras.Model:
    """Flatten, then Dropout before every Dense layer but the output's, as in the seed article.

    Every initializer and dropout layer gets its own seed drawn from `train.seed`, so that a model
    built twice in one process (as when a resume state turns out unusable) starts identical.
    """
    from stages.runtime import keras  # here, not at the top: bad params fail before TensorFlow loads

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


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The shuffle of one epoch, a function of (seed, epoch) only, so any epoch can be replayed."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def tensor_view(array: np.ndarray) -> tf.Tensor:
    """A tensor over `array`'s memory (an aligned copy first if needed), not a copy of it.

    `tf.convert_to_tensor` copies, and held two copies of the training images at once: 330 MiB.
    """
    from stages.runtime import tf

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
    from stages.runtime import tf

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
    from stages.runtime import tf

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


def _renumber_shared_objects(config: object, numbers: dict[int, int]) -> None:
    """Replace Keras's `shared_object_id`s (Python object addresses) by first-seen order."""
    if isinstance(config, dict):
        if "shared_object_id" in config:
            config["shared_object_id"] = numbers.setdefault(config["shared_object_id"], len(numbers) + 1)
        for value in config.values():
            _renumber_shared_objects(value, numbers)
    elif isinstance(config, list):
        for value in config:
            _renumber_shared_objects(value, numbers)


def canonical_keras_archive(archive: bytes) -> bytes:
    """The same `.keras` zip without what changes from save to save of the same weights.

    That is the save date, the zip entry timestamps, and the memory addresses Keras writes as
    ids of shared objects in `config.json`.
    """
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(output, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "metadata.json":
                metadata = json.loads(data)
                metadata["date_saved"] = FIXED_SAVE_DATE
                data = json.dumps(metadata).encode()
            elif entry.filename == "config.json":
                config = json.loads(data)
                _renumber_shared_objects(config, {})
                data = json.dumps(config).encode()
            target.writestr(zipfile.ZipInfo(entry.filename, date_time=ZIP_EPOCH), data, entry.compress_type)
    return output.getvalue()


def save_model(model: keras.Model, path: Path) -> None:
    with writing("the model", path, saved_size(model)), atomic_file(path) as temporary:
        model.save(temporary)
        temporary.write_bytes(canonical_keras_archive(temporary.read_bytes()))


def _log_epoch(live: Live, metrics: Metrics) -> None:
    for name, value in metrics.items():
        split, metric = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
        live.log_metric(f"{split}/{metric}", value)
    live.next_step()


def _resume_or_start(directory: Path, params: TrainParams, image_shape: tuple[int, ...]) -> tuple[keras.Model, list]:
    """A model and the history of its completed epochs: from the resume state if one is usable."""
    model = build_model(params, image_shape)
    if not (directory / STATE_FILE).exists():
        return model, []
    try:
        history = load_state(directory, model)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"train: discarding unusable resume state {directory} ({error}); starting from epoch 1", file=sys.stderr)
        discard_state(directory)
        return build_model(params, image_shape), []
    print(f"train: resuming after epoch {len(history)}/{params.epochs} from {directory}", flush=True)
    return model, history


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="directory with train.npz and validation.npz")
    parser.add_argument("model", type=Path, help="where to write the .keras model")
    parser.add_argument("curves", type=Path, help="DVCLive directory for the per-epoch metrics")
    args = parser.parse_args(argv)
    params = load_params(TrainParams)
    inputs = [args.prepared / "train.npz", args.prepared / "validation.npz"]
    train, validation = (load_split(args.prepared, name, as_pixels=True) for name in ("train", "validation"))
    code = [Path(__file__), Path(stages.resume.__file__)]
    state_directory = resume_directory([asdict(params), *(path.read_text() for path in code)], inputs)
    # Only now, with params and inputs checked: importing TensorFlow takes seconds.
    from dvclive import Live

    from stages.runtime import configure_tensorflow

    configure_tensorflow(params.seed)
    model, history = _resume_or_start(state_directory, params, train.images.shape[1:])
    width = len(str(params.epochs))
    started = time.perf_counter()

    def end_of_epoch(epoch: int, metrics: Metrics) -> None:
        nonlocal started
        history.append(metrics)
        save_state(state_directory, model, history)
        _log_epoch(live, metrics)
        print(
            f"epoch {epoch + 1:>{width}}/{params.epochs}"
            f"  loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}"
            f"  val_loss {metrics['val_loss']:.4f}  val_accuracy {metrics['val_accuracy']:.4f}"
            f"  {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        started = time.perf_counter()

    args.curves.mkdir(parents=True, exist_ok=True)
    curves = writing("the training curves", args.curves, CURVE_BYTES_PER_EPOCH * params.epochs)
    with curves, tempfile.TemporaryDirectory(dir=args.curves, prefix=TEMP_PREFIX) as staging:
        # Not `with Live(...)`: its exit writes the summary even after a failure, a second error on a full disk.
        live = Live(staging, save_dvc_exp=False, dvcyaml=False)
        for metrics in history:
            _log_epoch(live, metrics)
        train_model(model, train, validation, params, end_of_epoch, first_epoch=len(history))
        live.end()
        save_model(model, args.model)
        # DVC tracks these two separately (plots cached, metrics in git): publish each one.
        for name in ("plots", "metrics.json"):
            publish(Path(staging, name), args.curves / name)
    discard_state(state_directory)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("train", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
