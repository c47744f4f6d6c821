"""The same model bytes whatever TensorFlow variables the user has set (fmnist/kernels.py).

Each case runs the real train stage for 2 epochs in its own process (TensorFlow reads these
variables once, at import) on the same small prepared data, and compares the model file's bytes.
Each case trains once per module; `make test` runs three of them (`DEFAULT_TIER`), the slow tier all.
Without the pins, on the AVX-512 host where this was written, the oneDNN, instruction-set, XLA,
contraction-kernel and keras.json cases each gave other bytes; the thread and fpmath cases did not
change the bytes there, and are kept because the pins cover them on other hosts and builds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, set_param, tool_env

from fmnist.cpuinfo import describe_host
from fmnist.dataset import Split, normalise, save_split
from fmnist.kernels import KERNEL_ENVIRONMENT, pin_kernel_environment

KERAS_JSON = {"floatx": "float64", "epsilon": 0.001, "backend": "jax", "image_data_format": "channels_last"}
CASES = {
    "unset": {},
    "onednn-on": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "onednn-off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "onednn-on-avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn-avx512": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"},
    "isa-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41"},
    "fpmath-bf16": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
    "xla-auto-jit": {"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"},
    "eigen-contraction-kernel": {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"},
    "threads": {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "2", "OMP_NUM_THREADS": "2"},
    "keras-json-and-caps": {"KERAS_HOME": "{keras_home}", "KERAS_MAX_STEPS_PER_EPOCH": "3"},
}
# Unpinned, one of the two oneDNN cases gives other bytes on every host (its default is one or the other), and XLA
# on every host (docs/reproducibility.md): `make test` runs these; the slow tier all, a training process each.
DEFAULT_TIER = ("onednn-on", "onednn-off", "xla-auto-jit")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml at 2 epochs, 2,000 + 500 random prepared images, and a user's keras.json."""
    root = tmp_path_factory.mktemp("kernels")
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")
    set_param(root, "train.epochs", "2")
    rng = np.random.default_rng(0)
    (root / "prepared").mkdir()
    for name, count in (("train", 2000), ("validation", 500)):
        pixels = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        save_split(root / "prepared" / f"{name}.npz", Split(normalise(pixels), rng.integers(0, 10, count, np.uint8)))
    (root / "keras_home").mkdir()
    (root / "keras_home" / "keras.json").write_text(json.dumps(KERAS_JSON))
    return root


def train_under(workspace: Path, case: str) -> bytes:
    """The model bytes of the train stage run with the user's environment set to `CASES[case]`."""
    run = workspace / case
    run.mkdir()
    shutil.copy(workspace / "params.yaml", run / "params.yaml")
    environment = {name: value for name, value in tool_env().items() if name not in KERNEL_ENVIRONMENT}
    environment |= {name: value.format(keras_home=workspace / "keras_home") for name, value in CASES[case].items()}
    command = [sys.executable, "-m", "stages.train", str(workspace / "prepared"), "model.keras", "curves"]
    result = subprocess.run(command, cwd=run, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout
    return (run / "model.keras").read_bytes()


@pytest.fixture(scope="module")
def model_bytes(workspace: Path) -> Callable[[str], bytes]:
    """The model bytes of a case, trained once per module when a test first asks for it."""
    trained: dict[str, bytes] = {}

    def of(case: str) -> bytes:
        if case not in trained:
            trained[case] = train_under(workspace, case)
        return trained[case]

    return of


@pytest.mark.parametrize(
    "case",
    [case if case in DEFAULT_TIER else pytest.param(case, marks=pytest.mark.slow) for case in CASES if case != "unset"],
)
def test_the_users_tensorflow_variables_do_not_change_the_model_bytes(
    model_bytes: Callable[[str], bytes], case: str
) -> None:
    assert model_bytes(case) == model_bytes("unset"), f"{case} changed the model on {describe_host()}"


def test_pinning_after_tensorflow_was_imported_is_refused() -> None:
    import fmnist.tensorflow_setup  # noqa: F401  (TensorFlow is imported now)

    environment = {"TF_ENABLE_ONEDNN_OPTS": "1"}
    with pytest.raises(RuntimeError, match="TensorFlow was imported before"):
        pin_kernel_environment(environment)
    assert environment == {"TF_ENABLE_ONEDNN_OPTS": "1"}


def test_pinning_sets_and_removes_exactly_the_listed_variables(tmp_path: Path) -> None:
    environment = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_XLA_FLAGS": "--tf_xla_auto_jit=2", "HOME": "/home/user"}
    # In a fresh interpreter: this one may have imported TensorFlow already.
    script = "import json, sys; from fmnist.kernels import pin_kernel_environment as pin; "
    script += "environment = json.loads(sys.argv[1]); pin(environment); print(json.dumps(environment))"
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(environment)],
        cwd=tmp_path,  # the installed package, not the repository's directory
        capture_output=True,
        text=True,
        check=True,
    )
    pinned = json.loads(result.stdout)
    assert pinned == {"HOME": "/home/user"} | {k: v for k, v in KERNEL_ENVIRONMENT.items() if v is not None}


def test_the_host_description_names_the_cpu_and_its_vector_extensions(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 1\n"
        "flags\t\t: fpu sse2 avx fma avx2 bmi2\n\nprocessor\t: 1\nmodel name\t: other\n"
    )
    assert describe_host(cpuinfo).startswith("AMD EPYC (family 25, model 1): fma avx2")
