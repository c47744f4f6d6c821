"""The prepared-data contract between prepare, train and evaluate: one `.npz` per split.

Each file holds float32 `images` of shape (n, 28, 28) scaled to [0, 1] and uint8 `labels` 0-9,
written with fixed zip timestamps so that equal arrays give equal bytes (and equal DVC hashes).
Arrays are read back into 64-byte-aligned memory, which TensorFlow can use in place (see
`stages.train`), so the 172 MB of training images exist once in the train stage, not three times.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from stages.cli import StageError

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# TensorFlow's CPU kernels require tensor data to start on this boundary (EIGEN_MAX_ALIGN_BYTES).
TENSOR_ALIGNMENT = 64
_READ_CHUNK = 1 << 20


class Split(NamedTuple):
    images: np.ndarray
    labels: np.ndarray


def save_split(path: Path, split: Split) -> None:
    """Like `np.savez`, but with fixed entry timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in split._asdict().items():
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-ordered array whose data starts on a `TENSOR_ALIGNMENT` boundary."""
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + TENSOR_ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % TENSOR_ALIGNMENT
    return buffer[start : start + size].view(dtype).reshape(shape)


def aligned(array: np.ndarray) -> np.ndarray:
    """`array` itself if TensorFlow can share it (C-contiguous, aligned, writable), else a copy that it can."""
    if array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % TENSOR_ALIGNMENT == 0:
        return array
    copy = _aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy


def _read_array(handle: IO[bytes], name: str) -> np.ndarray:
    """One `.npy` entry, read straight into aligned memory (no whole-file intermediate buffer)."""
    version = np.lib.format.read_magic(handle)
    if version != (1, 0):
        raise ValueError(f"{name}: unsupported .npy version {version}")
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
    if fortran_order or dtype.hasobject:
        raise ValueError(f"{name}: not a plain C-ordered numeric array")
    array = _aligned_empty(shape, dtype)
    target = memoryview(array.reshape(-1).view(np.uint8))
    for start in range(0, len(target), _READ_CHUNK):
        chunk = target[start : start + _READ_CHUNK]
        if handle.readinto(chunk) != len(chunk):
            raise ValueError(f"{name}: truncated")
    return array


def load_split(directory: Path, name: str) -> Split:
    """Read `<directory>/<name>.npz` as written by `save_split`, into aligned arrays."""
    path = directory / f"{name}.npz"
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = {}
            for key in Split._fields:
                with archive.open(f"{key}.npy") as handle:
                    arrays[key] = _read_array(handle, f"{key}.npy")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise StageError(f"{path}: unreadable ({error}); rebuild it with 'dvc repro --force prepare'") from error
    return Split(**arrays)
