"""Resume state for an interrupted training run, kept outside DVC's outputs.

DVC deletes a stage's outputs before running it, so the state lives in `.resume/train/<key>/`,
where the key hashes everything the run depends on (params, input files, training code): a
changed param or dataset can never resume from a stale state. After each completed epoch the
state is rewritten atomically: the weights (with the optimizer's step count) in a per-epoch
file, then `state.json`, which names that file, its SHA-256, the dropout layers' random-stream
positions (Keras does not save those) and the metrics history. A state that fails any check is
reported and discarded, and training starts again from epoch 1.

A run that finishes removes its own state; `fmnist.resume_cleanup` removes the others (its docstring states the
rule), using the `run` that `state.json` records (`run_identity`) to tell whose state a directory is.

The weights file is a `.keras` archive, not `.weights.h5`: Keras builds the HDF5 data of an
archive in memory and Python writes the zip, so a full disk is a plain OSError. `save_weights`
hands HDF5 the file itself and leaves it open when a write fails; HDF5 then crashed the process
(SIGSEGV) while closing it at exit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmnist.atomic import atomic_file
from fmnist.errors import writing
from fmnist.keras_archive import saved_size
from fmnist.resume_cleanup import RESUME_ROOT
from fmnist.training import Metrics

if TYPE_CHECKING:
    from fmnist.tensorflow_setup import keras

STATE_FILE = "state.json"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def resume_directory(identity: object, files: Iterable[Path]) -> Path:
    """The state directory for a run defined by `identity` (JSON-able) and the bytes of `files`."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for path in files:
        digest.update(file_sha256(path).encode())
    return RESUME_ROOT / digest.hexdigest()[:16]


def _seed_states(model: keras.Model) -> list[keras.Variable]:
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


def save_state(
    directory: Path, model: keras.Model, history: list[Metrics], run: Mapping[str, Any] | None = None
) -> None:
    """Record that `len(history)` epochs are complete; a kill at any point leaves a usable state.

    `run` (`fmnist.resume_cleanup.run_identity`) names the run, for cleaning."""
    with writing("the resume state", directory, saved_size(model)):
        weights = directory / f"epoch-{len(history)}.keras"
        with atomic_file(weights) as temporary:
            model.save(temporary)
        state = {
            "weights": weights.name,
            "weights_sha256": file_sha256(weights),
            "seed_states": [variable.numpy().tolist() for variable in _seed_states(model)],
            "history": history,
            **({"run": run} if run is not None else {}),
        }
        with atomic_file(directory / STATE_FILE) as temporary:
            temporary.write_text(json.dumps(state), encoding="utf-8")
    for old in directory.glob("epoch-*.keras"):
        if old != weights:
            old.unlink()


def load_state(directory: Path, model: keras.Model) -> list[Metrics]:
    """Load the saved weights and random-stream positions into `model`; returns the history.

    Raises OSError, ValueError or KeyError when the state is missing, unreadable or inconsistent.
    """
    state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    weights = directory / state["weights"]
    if file_sha256(weights) != state["weights_sha256"]:
        raise ValueError(f"{weights.name} does not match its recorded SHA-256")
    model.optimizer.build(model.trainable_variables)  # else Keras skips loading momentum slots it has not created
    model.load_weights(weights)
    seed_states = _seed_states(model)
    if len(seed_states) != len(state["seed_states"]):
        raise ValueError("the number of dropout layers changed")
    for variable, value in zip(seed_states, state["seed_states"], strict=True):
        variable.assign(value)
    return [dict(metrics) for metrics in state["history"]]


def discard_state(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def resume_or_start(
    directory: Path, build: Callable[[], keras.Model], epochs: int
) -> tuple[keras.Model, list[Metrics]]:
    """A model and the history of its completed epochs: from the state in `directory` if one is usable.

    `build` must give the same initial model every time it is called, so that a discarded state restarts cleanly.
    """
    model = build()
    if not (directory / STATE_FILE).exists():
        return model, []
    try:
        history = load_state(directory, model)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"train: discarding unusable resume state {directory} ({error}); starting from epoch 1", file=sys.stderr)
        discard_state(directory)
        # Keras names layers and variables by a process-wide counter, and the names are in the saved file: start
        # the count again so that the restarted run saves the bytes an uninterrupted one would.
        from fmnist.tensorflow_setup import keras

        keras.backend.clear_session()
        return build(), []
    print(f"train: resuming after epoch {len(history)}/{epochs} from {directory}", flush=True)
    return model, history
