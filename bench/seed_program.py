"""The seed article's program, as written, changed only where Keras 3 or the lack of a network forces it.

Every departure from the article is marked `# CHANGED:` (forced) or `# ADDED:` (measurement only):

- `super().__init__(**kwargs)` is called first: Keras 3 refuses to set layers on an uninitialised Model.
- `call(self, input, training=None)`: Keras 3's `fit` passes `training=True` only to a model whose
  `call` accepts `training`; without it the Dropout layers stay off during `fit`, and the model
  trains exactly like one with rate 0 (same loss to the last digit after an epoch, checked on Keras
  3.15). The article's TF 2 Keras passed `training` to the inner layers either way.
  The body of `call` is unchanged: Keras 3 hands `training` on to the inner layers by itself.
- `SGD(learning_rate=0.01)`: Keras 3 removed the `lr` alias.
- The four IDX `.gz` files are read from Debian's copy (/usr/share/datasets/fashion-mnist) with the
  same code as `keras.datasets.fashion_mnist.load_data`, instead of being downloaded; the
  decompressed bytes are upstream's (see the checksums in stages/fetch.py).
- `--epochs` (default 60, the article's) and a callback that prints one line per epoch with its
  seconds, and the final test accuracy, so the benchmark can time it.

Everything else is the article's: float64 division by 255.0, validation on the first 5,000
*training* images (which are also trained on), the subclassed model with one Dropout layer
reused four times, TensorFlow's default thread pools, and `fit`'s defaults (batch 32,
shuffle, `verbose="auto"`). In Keras 3, "auto" means 1 and the progress bar is drawn with
`\\r` updates (at most every 0.05 s) whenever `posix` is loaded, that is on every Linux run,
tty or not; so running this with its output in a pipe does the same work as in a terminal.
"""

import argparse
import gzip
import time

import numpy as np
import tensorflow as tf  # noqa: F401  (the article imports it)
from tensorflow import keras

DATA_DIR = "/usr/share/datasets/fashion-mnist"  # ADDED: Debian's dataset-fashion-mnist package


def load_data(directory: str = DATA_DIR) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """CHANGED: the body of keras.datasets.fashion_mnist.load_data, on local files instead of downloads."""
    paths = [
        f"{directory}/{name}"
        for name in (
            "train-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
        )
    ]
    with gzip.open(paths[0], "rb") as lbpath:
        y_train = np.frombuffer(lbpath.read(), np.uint8, offset=8)
    with gzip.open(paths[1], "rb") as imgpath:
        x_train = np.frombuffer(imgpath.read(), np.uint8, offset=16).reshape(len(y_train), 28, 28)
    with gzip.open(paths[2], "rb") as lbpath:
        y_test = np.frombuffer(lbpath.read(), np.uint8, offset=8)
    with gzip.open(paths[3], "rb") as imgpath:
        x_test = np.frombuffer(imgpath.read(), np.uint8, offset=16).reshape(len(y_test), 28, 28)
    return (x_train, y_train), (x_test, y_test)


class EpochTimer(keras.callbacks.Callback):
    """ADDED: prints `epoch i/n done in Xs` at each epoch's end (training and validation)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # The leading newline ends the progress bar's line, which Keras finishes after this callback.
        seconds = time.perf_counter() - self.started
        print(f"\nepoch {epoch + 1}/{self.params['epochs']} done in {seconds:.2f}s", flush=True)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])  # ADDED
parser.add_argument("--epochs", type=int, default=60, help="the article trains for 60")  # ADDED
args = parser.parse_args()  # ADDED

(train_images, train_labels), (test_images, test_labels) = load_data()  # CHANGED: was keras.datasets...
train_images = train_images / 255.0
test_images = test_images / 255.0
validation_images = train_images[:5000]
validation_labels = train_labels[:5000]


class CustomModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)  # CHANGED: Keras 3 requires this before any layer is assigned
        self.input_layer = keras.layers.Flatten(input_shape=(28, 28))
        self.hidden1 = keras.layers.Dense(200, activation="relu")
        self.hidden2 = keras.layers.Dense(100, activation="relu")
        self.hidden3 = keras.layers.Dense(60, activation="relu")
        self.output_layer = keras.layers.Dense(10, activation="softmax")
        self.dropout_layer = keras.layers.Dropout(rate=0.2)

    def call(self, input, training=None):  # CHANGED: without `training`, Keras 3 trains with dropout off
        input_layer = self.input_layer(input)
        input_layer = self.dropout_layer(input_layer)
        hidden1 = self.hidden1(input_layer)
        hidden1 = self.dropout_layer(hidden1)
        hidden2 = self.hidden2(hidden1)
        hidden2 = self.dropout_layer(hidden2)
        hidden3 = self.hidden3(hidden2)
        hidden3 = self.dropout_layer(hidden3)
        output_layer = self.output_layer(hidden3)
        return output_layer


model = CustomModel()
sgd = keras.optimizers.SGD(learning_rate=0.01)  # CHANGED: Keras 3 has no `lr` alias
model.compile(loss="sparse_categorical_crossentropy", optimizer=sgd, metrics=["accuracy"])
model.fit(
    train_images,
    train_labels,
    epochs=args.epochs,  # ADDED: the article's 60 by default
    validation_data=(validation_images, validation_labels),
    callbacks=[EpochTimer()],  # ADDED
)
_, test_accuracy = model.evaluate(test_images, test_labels)  # ADDED: keep the result to print it
print(f"\ntest accuracy {test_accuracy:.4f}")  # ADDED
