"""The IDX format of the original Fashion-MNIST files: decoding, with every check named after the file."""

from __future__ import annotations

import numpy as np

from fmnist.dataset import CLASS_NAMES, Split
from fmnist.errors import StageError

IMAGE_SHAPE = (28, 28)
IDX_UBYTE = 0x08
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IdxError(StageError):
    """A raw file that is not the IDX array it should be."""


def parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (magic 0x00 0x00 0x08 ndim, big-endian uint32 dims)."""
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxError(f"{name}: truncated header ({len(data)} bytes)")
    if data[:2] != b"\x00\x00" or data[2] != IDX_UBYTE or data[3] != ndim:
        raise IdxError(f"{name}: bad magic number {data[:4].hex()} (expected 000008{ndim:02x})")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header_size + int(np.prod(shape))
    if len(data) != expected:
        raise IdxError(f"{name}: {len(data)} bytes, header {shape} needs {expected}")
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def decode_split(image_bytes: bytes, label_bytes: bytes, names: tuple[str, str]) -> Split:
    """Images and labels of one IDX pair, checked for shape, count and label range."""
    images = parse_idx(image_bytes, names[0], ndim=3)
    labels = parse_idx(label_bytes, names[1], ndim=1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise IdxError(f"{names[0]}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise IdxError(f"{names[0]} has {len(images)} images but {names[1]} has {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise IdxError(f"{names[1]}: label {labels.max()} outside 0..{len(CLASS_NAMES) - 1}")
    return Split(images, labels)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file: what `parse_idx` reads (tests and small datasets write these)."""
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
