"""TensorFlow set-up shared by train and evaluate: quiet logs, seeds, op determinism, one thread.

One intra-op and one inter-op thread was the fastest setting measured for this small network
on 2 cores (the per-step work is too small to split), and it lets two sweep workers share the
machine without starving each other. Thread counts are pinned here, not taken from the
environment, so that the same commit gives the same float results everywhere it runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

TENSORFLOW_THREADS = 1


def configure_tensorflow(seed: int) -> None:
    """Call before building any model or running any op."""
    tf.config.threading.set_intra_op_parallelism_threads(TENSORFLOW_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(TENSORFLOW_THREADS)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
