"""The README's example for people who only want the model: it runs, and it states the data contract the code has."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
from conftest import REPO_ROOT, idx_bytes, run

from fmnist.dataset import CLASS_NAMES, Split, normalise, save_split
from fmnist.keras_archive import save_model
from fmnist.model import build_model
from fmnist.train_params import TrainParams

MODEL_SECTION = "## For people who only want the model"


def model_section() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(MODEL_SECTION)
    return readme[start : readme.index("\n## ", start + len(MODEL_SECTION))]


def python_example() -> str:
    return re.search(r"```python\n(.*?)```", model_section(), re.DOTALL).group(1)


def test_readme_class_names_are_the_codes_in_label_order() -> None:
    table_row = next(line for line in model_section().splitlines() if line.startswith("| class |"))
    assert tuple(cell.strip() for cell in table_row.strip("|").split("|")[1:]) == CLASS_NAMES
    assignments = [node for node in ast.parse(python_example()).body if isinstance(node, ast.Assign)]
    names = next(node.value for node in assignments if ast.unparse(node.targets[0]) == "CLASS_NAMES")
    assert tuple(ast.literal_eval(names)) == CLASS_NAMES


def test_readme_model_example_runs_on_prepared_data_and_raw_pixels(tmp_path: Path) -> None:
    """On files laid out as the pipeline writes them: a (tiny, untrained) model.keras, test.npz, the raw test images."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/raw").mkdir()
    (tmp_path / "models").mkdir()
    save_split(tmp_path / "data/prepared/test.npz", Split(normalise(pixels), np.arange(4, dtype=np.uint8)))
    (tmp_path / "data/raw/t10k-images-idx3-ubyte").write_bytes(idx_bytes(pixels))
    params = TrainParams(hidden_units=(4,), dropout=0.2, learning_rate=0.01, batch_size=2, epochs=1, seed=0)
    model = build_model(params)
    for layer in model.layers:  # non-zero biases, so that a wrong input scale changes the predicted class
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(size=layer.bias.shape))
    save_model(model, tmp_path / "models/model.keras")

    lines = run([sys.executable, "-c", python_example()], cwd=tmp_path).stdout.splitlines()

    assert len(lines) == 4
    assert [line.split("  true ")[-1] for line in lines[:3]] == list(CLASS_NAMES[:3])
    first_prepared = re.match(r"predicted (.+?) +p=", lines[0]).group(1)
    assert lines[3] == f"first raw test image: {first_prepared}"  # the same image, scaled as prepare scales it
