"""Train stage: the dropout MLP on the train split, validated on the validation split each epoch.

Per-epoch loss and accuracy go to DVCLive (curves for `dvc plots`) and one line to the terminal. After every
epoch the run's state is saved (`fmnist.resume`), so an interrupted run continues from its last completed epoch
and ends with the same weights as an uninterrupted one. The network is `fmnist.model`, the loop
`fmnist.training`; the model is saved with fixed bytes (`fmnist.keras_archive`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.atomic import TEMP_PREFIX, publish
from fmnist.code import code_closure
from fmnist.dataset import load_split
from fmnist.errors import writing
from fmnist.keras_archive import save_model
from fmnist.model import build_model
from fmnist.params import load_params
from fmnist.resume import discard_state, resume_directory, resume_or_start, save_state
from fmnist.resume_cleanup import clean_states, run_identity
from fmnist.runner import run_stage
from fmnist.train_params import TrainParams
from fmnist.training import Metrics, train_model

if TYPE_CHECKING:
    from dvclive import Live

CURVE_BYTES_PER_EPOCH = 4096  # DVCLive's four .tsv lines and summary, rounded up to a file system block


def _relative(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _log_epoch(live: Live, metrics: Metrics) -> None:
    for name, value in metrics.items():
        split, metric = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
        live.log_metric(f"{split}/{metric}", value)
    live.next_step()


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="directory with train.npz and validation.npz")
    parser.add_argument("model", type=Path, help="where to write the .keras model")
    parser.add_argument("curves", type=Path, help="DVCLive directory for the per-epoch metrics")
    args = parser.parse_args(argv)
    params = load_params(TrainParams)
    inputs = [args.prepared / "train.npz", args.prepared / "validation.npz"]
    train, validation = (load_split(args.prepared, name, as_pixels=True) for name in ("train", "validation"))
    code_files = code_closure(__spec__.name)
    code = [path.read_text(encoding="utf-8") for path in code_files]
    state_directory = resume_directory([asdict(params), *code], inputs)
    clean_states(keep=state_directory)
    # Only now, with params and inputs checked: importing TensorFlow takes seconds.
    from dvclive import Live

    from fmnist.tensorflow_setup import configure_tensorflow

    configure_tensorflow(params.seed)
    image_shape = train.images.shape[1:]
    model, history = resume_or_start(state_directory, lambda: build_model(params, image_shape), params.epochs)
    deps = [*(_relative(path) for path in code_files), *inputs]  # as dvc.yaml lists them
    run = run_identity(TrainParams.SECTION, asdict(params), deps)
    width = len(str(params.epochs))
    started = time.perf_counter()

    def end_of_epoch(epoch: int, metrics: Metrics) -> None:
        nonlocal started
        history.append(metrics)
        save_state(state_directory, model, history, run)
        _log_epoch(live, metrics)
        print(
            f"epoch {epoch + 1:>{width}}/{params.epochs}"
            f"  loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}"
            f"  val_loss {metrics['val_loss']:.4f}  val_accuracy {metrics['val_accuracy']:.4f}"
            f"  {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        started = time.perf_counter()

    args.curves.mkdir(parents=True, exist_ok=True)
    curves = writing("the training curves", args.curves, CURVE_BYTES_PER_EPOCH * params.epochs)
    with curves, tempfile.TemporaryDirectory(dir=args.curves, prefix=TEMP_PREFIX) as staging:
        # Not `with Live(...)`: its exit writes the summary even after a failure, a second error on a full disk.
        live = Live(staging, save_dvc_exp=False, dvcyaml=False)
        for metrics in history:
            _log_epoch(live, metrics)
        train_model(model, train, validation, params, end_of_epoch, first_epoch=len(history))
        live.end()
        save_model(model, args.model)
        # DVC tracks these two separately (plots cached, metrics in git): publish each one.
        for name in ("plots", "metrics.json"):
            publish(Path(staging, name), args.curves / name)
    discard_state(state_directory)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("train", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
