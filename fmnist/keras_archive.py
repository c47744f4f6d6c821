"""Saving a `.keras` model so that the same weights always give the same file bytes (and the same DVC hash)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmnist.atomic import atomic_file
from fmnist.dataset import ZIP_EPOCH
from fmnist.errors import StageError, writing

if TYPE_CHECKING:
    from fmnist.tensorflow_setup import keras

FIXED_SAVE_DATE = "1980-01-01@00:00:00"


def saved_size(model: keras.Model) -> int:
    """About the size of `model` saved with its optimizer: the bytes of their variables."""
    variables = [*model.variables, *model.optimizer.variables]
    return sum(int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize for variable in variables)


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


def load_model(path: Path) -> keras.Model:
    """The model saved at `path`; a missing, truncated or corrupt file is a one-line `StageError` naming it."""
    from fmnist.tensorflow_setup import keras

    if not path.is_file():
        raise StageError(f"{path}: missing (run the train stage first: 'dvc repro train')")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there
        reason = "truncated, or not a .keras zip archive"
    else:
        try:
            return keras.saving.load_model(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    raise StageError(
        f"{path}: not a readable .keras model ({reason}); 'dvc checkout {path}' restores the committed one"
    )
