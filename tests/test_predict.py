"""`python -m fmnist.predict`: the trained model on PNG and .npz files, scaled as prepare scales, and bad inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from fmnist.dataset import CLASS_NAMES, Split, normalise
from fmnist.keras_archive import save_model
from fmnist.model import build_model
from fmnist.tensorflow_setup import configure_tensorflow, keras, tf
from fmnist.train_params import TrainParams
from fmnist.training import train_model

PARAMS = TrainParams(hidden_units=(32,), dropout=0.2, learning_rate=0.01, batch_size=8, epochs=1, seed=3)


def tiny_pixels(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def png(pixels: np.ndarray) -> bytes:
    return tf.io.encode_png(pixels[..., np.newaxis] if pixels.ndim == 2 else pixels).numpy()


def predict(*args: str, cwd: Path):
    return run([sys.executable, "-m", "fmnist.predict", *args], cwd=cwd, check=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for 1 epoch on 64 random images, saved as the train stage saves it."""
    configure_tensorflow(PARAMS.seed)
    model = build_model(PARAMS)
    labels = np.random.default_rng(1).integers(0, 10, 64).astype(np.uint8)
    train_model(
        model, Split(normalise(tiny_pixels(64, 1)), labels), Split(normalise(tiny_pixels(8, 2)), labels[:8]), PARAMS
    )
    path = tmp_path_factory.mktemp("predict") / "model.keras"
    save_model(model, path)
    return path


def test_png_and_npz_get_the_models_probabilities_for_pixels_over_255(model: Path, tmp_path: Path) -> None:
    pixels = tiny_pixels(3, 4)
    (tmp_path / "one.png").write_bytes(png(pixels[0]))
    np.savez(tmp_path / "pixels.npz", images=pixels[1:])  # uint8 pixels
    np.savez(tmp_path / "prepared.npz", images=normalise(pixels), labels=np.zeros(3, np.uint8))  # as prepare writes

    result = predict("--model", str(model), "one.png", "pixels.npz", "prepared.npz", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    expected = keras.saving.load_model(model).predict(normalise(pixels), verbose=0)
    assert len({row.round(4).tobytes() for row in expected}) == len(pixels)  # a model whose output depends on its input
    sources = ["one.png", "pixels.npz[0]", "pixels.npz[1]", "prepared.npz[0]", "prepared.npz[1]", "prepared.npz[2]"]
    rows = [expected[0], expected[1], expected[2], *expected]
    lines = result.stdout.splitlines()
    assert len(lines) == len(sources)
    for line, source, row in zip(lines, sources, rows, strict=True):
        best = int(row.argmax())
        every = "  ".join(f"{name} {p:.4f}" for name, p in zip(CLASS_NAMES, row.tolist(), strict=True))
        assert line == f"{source}  {CLASS_NAMES[best]}  {row[best]:.4f}    {every}"


def write_bad_inputs(directory: Path) -> None:
    pixels = tiny_pixels(2, 5)
    files = {
        "text.png": b"train:\n  dropout: 0.2\n",
        "big.png": png(np.zeros((32, 32), np.uint8)),
        "colour.png": png(np.zeros((28, 28, 3), np.uint8)),
        "damaged.png": png(pixels[0])[:60],
        "unreadable.npz": b"not a zip",
        "model.txt": b"not a model",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    np.savez(directory / "good.npz", images=pixels)
    np.savez(directory / "labels-only.npz", labels=np.zeros(2, np.uint8))
    np.savez(directory / "shape.npz", images=np.zeros((2, 32, 32), np.uint8))
    np.savez(directory / "unscaled.npz", images=pixels.astype(np.float32))  # pixels not divided by 255
    np.savez(directory / "ints.npz", images=pixels.astype(np.int64))


NOT_GRAYSCALE_28 = "expected a 28x28 8-bit grayscale image"
NOT_SCALED = "images must be uint8 pixels or floats in [0, 1] (pixels / 255), got"
BAD_INPUTS = {  # case: (arguments after --model, the error after "predict: error: ")
    "missing-model": (["none.keras", "good.npz"], "none.keras: missing (run the train stage first: 'dvc repro train')"),
    "not-a-model": (["model.txt", "good.npz"], "model.txt: not a readable .keras model"),
    "missing-input": ([None, "nothing.png"], "nothing.png: no such file"),
    "other-suffix": ([None, "model.txt"], "model.txt: not a .png or .npz file"),
    "not-a-png": ([None, "text.png"], "text.png: not a PNG image"),
    "wrong-size": ([None, "big.png"], f"big.png: 32x32 PNG, 8-bit grayscale; {NOT_GRAYSCALE_28}"),
    "colour": ([None, "colour.png"], f"colour.png: 28x28 PNG, not 8-bit grayscale; {NOT_GRAYSCALE_28}"),
    "damaged-png": ([None, "damaged.png"], "damaged.png: damaged PNG ("),
    "unreadable-npz": ([None, "unreadable.npz"], "unreadable.npz: not a readable .npz file ("),
    "no-images": ([None, "labels-only.npz"], "labels-only.npz: no 'images' array"),
    "wrong-shape": ([None, "shape.npz"], "shape.npz: images of shape (2, 32, 32); expected (n, 28, 28) or (28, 28)"),
    "unscaled": ([None, "unscaled.npz"], f"unscaled.npz: {NOT_SCALED} float32"),
    "ints": ([None, "ints.npz"], f"ints.npz: {NOT_SCALED} int64"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_naming_the_file(model: Path, tmp_path: Path, case: str) -> None:
    write_bad_inputs(tmp_path)
    (model_arg, *inputs), message = BAD_INPUTS[case]

    result = predict("--model", model_arg or str(model), *inputs, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"predict: error: {message}"), result.stderr
