"""The prepared-data contract between prepare, train and evaluate: one `.npz` per split.

Each file holds float32 `images` of shape (n, 28, 28) scaled to [0, 1] and uint8 `labels` 0-9,
written with fixed zip timestamps so that equal arrays give equal bytes (and equal DVC hashes).
Arrays are read back into 64-byte-aligned memory, which TensorFlow can use in place (see
`stages.train`), so the training images exist once in the train stage, not three times. The train
stage goes one step further and holds them as the 8-bit pixels `normalise` made them from: exact,
and a quarter of the 172 MB.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from fmnist.errors import StageError

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
PIXEL_LEVELS = 255
# TensorFlow's CPU kernels require tensor data to start on this boundary (EIGEN_MAX_ALIGN_BYTES).
TENSOR_ALIGNMENT = 64
_READ_CHUNK = 1 << 20


class Split(NamedTuple):
    images: np.ndarray
    labels: np.ndarray


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1]: the prepared images."""
    return pixels.astype(np.float32) / np.float32(PIXEL_LEVELS)


def pixels_of(images: np.ndarray) -> np.ndarray | None:
    """The uint8 pixels that `normalise` turns into exactly `images`, bit for bit; None if there are none."""
    with np.errstate(invalid="ignore"):  # NaN and out-of-range values fail the comparison below
        pixels = np.rint(images * np.float32(PIXEL_LEVELS)).astype(np.uint8)
    exact = images.dtype == np.float32 and np.array_equal(normalise(pixels).view(np.uint32), images.view(np.uint32))
    return pixels if exact else None


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


def _read_header(handle: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of a `.npy` entry, leaving `handle` at its data."""
    version = np.lib.format.read_magic(handle)
    if version != (1, 0):
        raise ValueError(f"{name}: unsupported .npy version {version}")
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
    if fortran_order or dtype.hasobject:
        raise ValueError(f"{name}: not a plain C-ordered numeric array")
    return shape, dtype


def _read_into(handle: IO[bytes], name: str, array: np.ndarray) -> None:
    """Fill the C-contiguous `array` from `handle` in chunks (no whole-file intermediate buffer)."""
    target = memoryview(array.reshape(-1).view(np.uint8))
    for start in range(0, len(target), _READ_CHUNK):
        chunk = target[start : start + _READ_CHUNK]
        if handle.readinto(chunk) != len(chunk):
            raise ValueError(f"{name}: truncated")


def _read_array(handle: IO[bytes], name: str) -> np.ndarray:
    """One `.npy` entry, read straight into aligned memory."""
    array = _aligned_empty(*_read_header(handle, name))
    _read_into(handle, name, array)
    return array


def _read_pixels(handle: IO[bytes], name: str) -> np.ndarray | None:
    """One `.npy` entry of images as their pixels (`pixels_of`), a chunk at a time; None if it has none."""
    shape, dtype = _read_header(handle, name)
    if dtype != np.float32 or not shape:
        return None
    pixels = _aligned_empty(shape, np.dtype(np.uint8))
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    rows = max(1, _READ_CHUNK // max(1, row_bytes))
    chunk = np.empty((rows, *shape[1:]), dtype)
    for start in range(0, shape[0], rows):
        images = chunk[: min(rows, shape[0] - start)]
        _read_into(handle, name, images)
        chunk_pixels = pixels_of(images)
        if chunk_pixels is None:
            return None
        pixels[start : start + len(images)] = chunk_pixels
    return pixels


def load_split(directory: Path, name: str, as_pixels: bool = False) -> Split:
    """Read `<directory>/<name>.npz` as written by `save_split`, into aligned arrays.

    With `as_pixels`, the images come back as their uint8 pixels if every image is exactly
    `normalise`d pixels, as prepare writes them (a quarter of the memory), else as they are.
    """
    path = directory / f"{name}.npz"
    try:
        with zipfile.ZipFile(path) as archive:
            images = None
            if as_pixels:
                with archive.open("images.npy") as handle:
                    images = _read_pixels(handle, "images.npy")
            if images is None:
                with archive.open("images.npy") as handle:
                    images = _read_array(handle, "images.npy")
            with archive.open("labels.npy") as handle:
                labels = _read_array(handle, "labels.npy")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise StageError(f"{path}: unreadable ({error}); rebuild it with 'dvc repro --force prepare'") from error
    return Split(images, labels)
