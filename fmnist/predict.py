"""Classify Fashion-MNIST-style images with the trained model: one line per image, top class and all probabilities.

Inputs are 28x28 8-bit grayscale PNG files (a light garment on black, as in Fashion-MNIST), or `.npz` files with
an `images` array of shape (n, 28, 28) or (28, 28): uint8 pixels, or floats in [0, 1] as `data/prepared/*.npz`
holds them. Pixels are scaled exactly as the prepare stage scales them (`fmnist.dataset.normalise`, pixels / 255).
Not a pipeline stage: nothing in `dvc.yaml` depends on it.

Usage, from the repository root:  python -m fmnist.predict [--model models/model.keras] IMAGE.png|IMAGES.npz ...
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmnist.dataset import CLASS_NAMES, normalise
from fmnist.errors import StageError
from fmnist.keras_archive import load_model
from fmnist.runner import run_stage
from fmnist.scores import predicted_probabilities

IMAGE_SHAPE = (28, 28)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAYSCALE = 0  # the IHDR colour type


def check_png_header(data: bytes, name: str) -> None:
    """Refuse anything but an 8-bit grayscale PNG of IMAGE_SHAPE, from its header (no decoding needed)."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise StageError(f"{name}: not a PNG image")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    bit_depth, colour_type = data[24], data[25]
    if (height, width) != IMAGE_SHAPE or bit_depth != 8 or colour_type != PNG_GRAYSCALE:
        kind = "8-bit grayscale" if (bit_depth, colour_type) == (8, PNG_GRAYSCALE) else "not 8-bit grayscale"
        raise StageError(f"{name}: {width}x{height} PNG, {kind}; expected a 28x28 8-bit grayscale image")


def model_input(images: np.ndarray, name: str) -> np.ndarray:
    """(n, 28, 28) float32 in [0, 1], as prepare writes it, from uint8 pixels or already scaled floats."""
    if images.shape == IMAGE_SHAPE:
        images = images[np.newaxis]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or len(images) == 0:
        raise StageError(f"{name}: images of shape {images.shape}; expected (n, 28, 28) or (28, 28)")
    if images.dtype == np.uint8:
        return normalise(images)
    if images.dtype.kind != "f" or not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        raise StageError(f"{name}: images must be uint8 pixels or floats in [0, 1] (pixels / 255), got {images.dtype}")
    return images.astype(np.float32)


def read_npz_images(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["images"]
    except KeyError:
        raise StageError(f"{path}: no 'images' array") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise StageError(f"{path}: not a readable .npz file ({error})") from None


def read_checked(path: Path) -> bytes | np.ndarray:
    """A PNG's bytes, its header checked, or an .npz file's images as the model takes them; before TensorFlow loads."""
    if path.suffix not in (".png", ".npz"):
        raise StageError(f"{path}: not a .png or .npz file")
    if not path.is_file():
        raise StageError(f"{path}: no such file")
    if path.suffix == ".npz":
        return model_input(read_npz_images(path), str(path))
    data = path.read_bytes()
    check_png_header(data, str(path))
    return data


def decode_png(data: bytes, name: str) -> np.ndarray:
    from fmnist.tensorflow_setup import tf

    try:
        pixels = tf.io.decode_png(data, channels=1).numpy()[:, :, 0]
    except tf.errors.InvalidArgumentError as error:
        raise StageError(f"{name}: damaged PNG ({error.message})") from None
    return model_input(pixels, name)


def prediction_lines(sources: Sequence[str], probabilities: np.ndarray) -> list[str]:
    """One line per image: its source, the most probable class and its probability, then every class's."""
    lines = []
    for source, row in zip(sources, probabilities.tolist(), strict=True):
        best = int(np.argmax(row))
        every = "  ".join(f"{name} {p:.4f}" for name, p in zip(CLASS_NAMES, row, strict=True))
        lines.append(f"{source}  {CLASS_NAMES[best]}  {row[best]:.4f}    {every}")
    return lines


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fmnist.predict", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="28x28 grayscale .png files or .npz files with 'images'")
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"), help="the trained .keras model")
    args = parser.parse_args(argv)
    inputs = {path: read_checked(path) for path in args.inputs}

    from fmnist.tensorflow_setup import configure_tensorflow  # only now: importing TensorFlow takes seconds

    configure_tensorflow(seed=0)
    batches = {path: decode_png(data, str(path)) if isinstance(data, bytes) else data for path, data in inputs.items()}
    sources = [
        str(path) if path.suffix == ".png" else f"{path}[{index}]"
        for path, images in batches.items()
        for index in range(len(images))
    ]
    model = load_model(args.model)
    probabilities = predicted_probabilities(model, np.concatenate(list(batches.values())))
    print("\n".join(prediction_lines(sources, probabilities)))


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("predict", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
