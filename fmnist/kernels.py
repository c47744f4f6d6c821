"""Which CPU kernels TensorFlow runs: pinned here, before TensorFlow is imported, whatever the host or the user set.

TensorFlow reads these variables once, when it is imported or at its first op, and picks kernels
by them and by the host's CPU. Left alone, the same commit gives different model bytes on a host
with AVX-512 and on one without, and under a user's `TF_ENABLE_ONEDNN_OPTS=1`.
`fmnist.tensorflow_setup` calls `pin_kernel_environment` before its TensorFlow import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# None: removed from the environment. Each entry says why.
KERNEL_ENVIRONMENT: dict[str, str | None] = {
    # TensorFlow turns its oneDNN ops on by default only for CPUs with AVX512_VNNI, AVX512_BF16,
    # AVX_VNNI or AMX (DefaultOneDnnPolicy in tensorflow/core/util/util.cc): off on every host.
    "TF_ENABLE_ONEDNN_OPTS": "0",
    # Even with those ops off, TensorFlow's matrix products run oneDNN's sgemm inside Eigen's
    # contraction (TENSORFLOW_USE_MKLDNN_CONTRACTION_KERNEL), and oneDNN generates its code for the
    # best instruction set the CPU has: AVX-512 hosts round differently from AVX2 ones. AVX2 is the
    # most every host of this machine kind has; capped there, an AVX-512 Zen 4 host and an
    # AVX2-only Zen 3 host gave the same 60-epoch model bytes (docs/reproducibility.md).
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": None,  # the older name of the same setting
    "ONEDNN_CPU_ISA_HINTS": None,  # e.g. prefer_ymm: another kernel choice
    "DNNL_CPU_ISA_HINTS": None,
    # No implicit down-conversion (bf16, tf32) inside oneDNN's float32 math.
    "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT",
    "DNNL_DEFAULT_FPMATH_MODE": None,
    "TF_SET_ONEDNN_FPMATH_MODE": None,
    "TF_ENABLE_ONEDNN_SPMM": None,
    # AMD's ZenDNN kernels, in TensorFlow builds that have them.
    "TF_ENABLE_ZENDNN_OPTS": "0",
    # "false" swaps the oneDNN sgemm above for Eigen's own kernel, which rounds differently.
    "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": None,
    # XLA auto-clustering (--tf_xla_auto_jit, --tf_xla_cpu_global_jit) fuses and reorders float ops.
    "TF_XLA_FLAGS": None,
    "XLA_FLAGS": None,
    # The mixed-precision graph rewrite would compute in float16/bfloat16.
    "TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_LEVEL": None,
    # One thread per pool (fmnist.tensorflow_setup sets the same through tf.config): a multi-threaded
    # contraction may split the sum over the inner dimension, and the order of a float sum is its result.
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "TF_USE_EIGEN_PARALLEL_FOR_IN_WORK_SHARDER": None,
    "TF_OVERRIDE_GLOBAL_THREADPOOL": None,
    "TF_DETERMINISTIC_OPS": "1",
    # Keras: always the TensorFlow backend (KERAS_BACKEND overrides ~/.keras/keras.json), and no cap
    # on epochs or steps (KERAS_MAX_EPOCHS and KERAS_MAX_STEPS_PER_EPOCH shorten `fit` silently).
    # keras.json's floatx and epsilon are set back by fmnist.tensorflow_setup after the import.
    "KERAS_BACKEND": "tensorflow",
    "KERAS_MAX_EPOCHS": None,
    "KERAS_MAX_STEPS_PER_EPOCH": None,
}


def pin_kernel_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Apply KERNEL_ENVIRONMENT; refuse if TensorFlow was already imported (too late to pin)."""
    if "tensorflow" in sys.modules:
        raise RuntimeError(
            "TensorFlow was imported before fmnist.kernels pinned its kernels: import fmnist.tensorflow_setup first"
        )
    for name, value in KERNEL_ENVIRONMENT.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
