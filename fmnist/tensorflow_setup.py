"""TensorFlow set-up shared by train and evaluate: pinned kernels, quiet logs, seeds, op determinism, one thread.

Every TensorFlow import of the project goes through this module, which pins the environment that
chooses TensorFlow's CPU kernels first (`fmnist.kernels`), so the same commit and params give the
same bytes whatever the host's CPU generation and whatever TensorFlow variables the user has set.

One intra-op and one inter-op thread was the fastest setting measured for this small network
on 2 cores (the per-step work is too small to split), and it lets two sweep workers share the
machine without starving each other. Thread counts are pinned here, not taken from the
environment, so that the same commit gives the same float results everywhere it runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from fmnist.kernels import pin_kernel_environment

TENSORFLOW_THREADS = 1
FLOATX = "float32"
EPSILON = 1e-7  # Keras's default fuzz factor, which its cross-entropy clips probabilities with


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """TensorFlow's C++ start-up lines (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL: hide them."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


pin_kernel_environment()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with _native_stderr_silenced():
    import keras
    import tensorflow as tf
# A user's ~/.keras/keras.json may set other values; both enter the arithmetic.
keras.config.set_floatx(FLOATX)
keras.config.set_epsilon(EPSILON)


def configure_tensorflow(seed: int) -> None:
    """Call before building any model or running any op: one thread each, op determinism, seeds."""
    tf.config.threading.set_intra_op_parallelism_threads(TENSORFLOW_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(TENSORFLOW_THREADS)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)


__all__ = ["configure_tensorflow", "keras", "tf"]
