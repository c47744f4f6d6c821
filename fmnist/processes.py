"""The environment of the commands the project starts (`dvc`, `git`, the stages): one definition for all."""

from __future__ import annotations

import os
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def tool_env() -> dict[str, str]:
    """This interpreter's venv first on PATH (for `dvc` and the stages' `python`), no analytics; without the malloc
    setting a Dask nanny gives its worker.

    The nanny sets `MALLOC_TRIM_THRESHOLD_` so that its worker returns memory to the system. Inherited by the train
    stage, it switches off glibc's adaptive mmap threshold: every step's gradients were then mapped and unmapped
    afresh, and a 60-epoch point trained in 124–140 s instead of 84 s (docs/sweeps.md).
    """
    environment = {key: value for key, value in os.environ.items() if key != "MALLOC_TRIM_THRESHOLD_"}
    return environment | {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
