"""The speed levers of issue #4, one at a time: seconds per epoch, and whether the math changed.

Run from the repository root after `dvc repro prepare`, on an otherwise idle machine (about
7 minutes with the defaults, 4 of them in the XLA row):

    .venv/bin/python -m bench.levers [--epochs 3] [--repeats 3]

Every variant trains the stage's network (`build_model`) at the seed's hyperparameters on
data/prepared, from the same initial weights, for `--epochs` epochs in the same batch order, in
its own process (TensorFlow fixes its thread pools at the first op). It prints the steady seconds
per epoch (epochs 2..N, median of `--repeats` runs) and whether the weights after the last epoch
are bit-for-bit those of plain `fit`, the reference: a lever that changes them changes the math.
The last two rows bound what is left: a hand-written training step with the fewest operations we
could write (not Keras's math to the bit), and the seven matrix products of one forward and
backward pass per batch alone, the floor for any TensorFlow loop at batch 32 on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.benchmark import (
    REPO_ROOT,
    SEED_HYPERPARAMETERS,
    SEED_TRAIN_EXAMPLES,
    VENV_BIN,
    Run,
    cell,
    log,
    median,
    read_params,
    run,
)
from fmnist.cpuinfo import describe_host, describe_kernels

if TYPE_CHECKING:
    from fmnist.dataset import Split
    from fmnist.tensorflow_setup import keras
    from fmnist.train_params import TrainParams

PREPARED = REPO_ROOT / "data" / "prepared"
IMAGE_PIXELS, CLASSES = 28 * 28, 10
REFERENCE = "fit"


@dataclass(frozen=True)
class Lever:
    description: str
    one_thread: bool = False
    steps_per_execution: int = 1
    jit_compile: bool = False
    compiled_loop: bool = False
    op_determinism: bool = True
    kernels: tuple[tuple[str, str | None], ...] = ()  # changes to fmnist.kernels.KERNEL_ENVIRONMENT


LEVERS = {
    REFERENCE: Lever("`fit`, Keras defaults (the seed's way)"),
    "fit-1-thread": Lever("`fit`, 1 TensorFlow thread", one_thread=True),
    "fit-spe": Lever("`fit`, `steps_per_execution=500`", steps_per_execution=500),
    "fit-spe-1-thread": Lever("`fit`, `steps_per_execution=500`, 1 thread", True, 500),
    # Keras compiles nothing with XLA while op determinism is on (trainer.model_supports_jit).
    "fit-spe-1-thread-xla": Lever(
        "`fit`, `steps_per_execution=500`, 1 thread, XLA (`jit_compile`), op determinism off",
        one_thread=True,
        steps_per_execution=500,
        jit_compile=True,
        op_determinism=False,
    ),
    "loop-2-threads": Lever("compiled epoch loop over Keras's `train_step`, 2 threads", compiled_loop=True),
    "stage": Lever("compiled epoch loop, 1 thread (the train stage)", one_thread=True, compiled_loop=True),
    # The stage with TensorFlow's own kernel choice instead of the pinned one (issue #10).
    "stage-host-default-kernels": Lever(
        "the train stage, kernels unpinned (TensorFlow's default for this CPU)",
        one_thread=True,
        compiled_loop=True,
        kernels=(("TF_ENABLE_ONEDNN_OPTS", None), ("ONEDNN_MAX_CPU_ISA", None)),
    ),
    "stage-onednn-on": Lever(
        "the train stage, oneDNN on, any instruction set",
        one_thread=True,
        compiled_loop=True,
        kernels=(("TF_ENABLE_ONEDNN_OPTS", "1"), ("ONEDNN_MAX_CPU_ISA", None)),
    ),
    "stage-onednn-off-any-isa": Lever(
        "the train stage, oneDNN off, any instruction set",
        one_thread=True,
        compiled_loop=True,
        kernels=(("ONEDNN_MAX_CPU_ISA", None),),
    ),
}
LEAN = "lean-step"
FLOOR = "matmul-floor"


def keras_fit(
    model: keras.Model, train: Split, validation: Split, params: TrainParams, validation_batch_size: int
) -> list[dict[str, float]]:
    """Train as the stage did before its compiled loop: `fit` once per epoch on the shuffled arrays."""
    from fmnist.training import epoch_order

    history = []
    for epoch in range(params.epochs):
        order = epoch_order(params.seed, epoch, len(train.labels))
        result = model.fit(
            train.images[order],
            train.labels[order],
            batch_size=params.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            validation_data=tuple(validation),
            validation_batch_size=validation_batch_size,
            verbose=0,
        )
        history.append({name: float(values[-1]) for name, values in result.history.items()})
        print(f"epoch {epoch + 1}/{params.epochs}", flush=True)
    return history


def configure_variant(seed: int, one_thread: bool, op_determinism: bool) -> None:
    """`fmnist.tensorflow_setup.configure_tensorflow(seed)` with its two settings as switches: off, TensorFlow's own
    thread pools, and XLA (which Keras silently declines to use while op determinism is on)."""
    from fmnist.tensorflow_setup import TENSORFLOW_THREADS, keras, tf

    if one_thread:
        tf.config.threading.set_intra_op_parallelism_threads(TENSORFLOW_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(TENSORFLOW_THREADS)
    if op_determinism:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)


def seed_params(epochs: int) -> TrainParams:
    """The seed program's network and optimiser (bench.benchmark.SEED_HYPERPARAMETERS), seeded."""
    from fmnist.train_params import TrainParams

    values = {key.split(".")[1]: value for key, value in SEED_HYPERPARAMETERS.items()}
    return TrainParams(**values | {"hidden_units": tuple(values["hidden_units"]), "epochs": epochs, "seed": 42})


def train_variant(lever: Lever, epochs: int) -> None:
    """Child: train with one lever and print the epoch lines and the final weights' SHA-256."""
    from fmnist.kernels import KERNEL_ENVIRONMENT

    KERNEL_ENVIRONMENT.update(lever.kernels)  # read when fmnist.tensorflow_setup imports TensorFlow, just below
    from fmnist.dataset import load_split
    from fmnist.model import build_model
    from fmnist.tensorflow_setup import keras
    from fmnist.training import VALIDATION_BATCH_SIZE, train_model

    params = seed_params(epochs)
    # The loop takes the images as the stage holds them (pixels); `fit` as the seed does (floats).
    train, validation = (load_split(PREPARED, name, as_pixels=lever.compiled_loop) for name in ("train", "validation"))
    configure_variant(params.seed, lever.one_thread, lever.op_determinism)
    model = build_model(params, train.images.shape[1:])
    if lever.compiled_loop:
        train_model(model, train, validation, params, lambda epoch, _: print(f"epoch {epoch + 1}/{epochs}", flush=True))
    else:
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=params.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=lever.steps_per_execution,
            jit_compile=lever.jit_compile,
        )
        assert model.jit_compile == lever.jit_compile, "Keras overrode jit_compile"
        keras_fit(model, train, validation, params, VALIDATION_BATCH_SIZE)
    digest = hashlib.sha256(b"".join(weight.tobytes() for weight in model.get_weights()))
    print(f"weights sha256 {digest.hexdigest()}", flush=True)


def matmul_floor(epochs: int) -> None:
    """Child: per epoch, only the matrix products of forward and backward at the seed's batch size, 1 thread."""
    from fmnist.tensorflow_setup import configure_tensorflow, tf

    params = seed_params(epochs)
    configure_tensorflow(params.seed)
    widths = [IMAGE_PIXELS, *params.hidden_units, CLASSES]
    steps = -(-(SEED_TRAIN_EXAMPLES - read_params(REPO_ROOT)["prepare"]["val_size"]) // params.batch_size)
    weights = [tf.random.normal((a, b)) for a, b in zip(widths, widths[1:], strict=False)]
    images = tf.random.normal((params.batch_size, widths[0]))

    @tf.function
    def epoch() -> tf.Tensor:
        total = tf.constant(0.0)
        for step in tf.range(steps):
            activations = [images + tf.cast(step, tf.float32)]
            for weight in weights:
                activations.append(tf.matmul(activations[-1], weight))
            gradient = activations[-1]
            for layer in reversed(range(len(weights))):
                total += tf.matmul(activations[layer], gradient, transpose_a=True)[0, 0]  # weight gradient
                if layer:  # no gradient is needed for the input images
                    gradient = tf.matmul(gradient, weights[layer], transpose_b=True)
        return total

    for index in range(epochs):
        epoch()
        print(f"epoch {index + 1}/{epochs}", flush=True)


def lean_step(epochs: int) -> None:
    """Child: the fewest TensorFlow ops we could write for this network's training step, 1 thread.

    Raw variables, dropout masks from `stateless_uniform`, fused softmax cross-entropy, plain SGD,
    no metrics: not Keras's math to the bit, so not a candidate for the stage, but a bound on what
    any hand-written step could gain over Keras's `train_step` in the same loop.
    """
    from fmnist.dataset import load_split
    from fmnist.tensorflow_setup import configure_tensorflow, tf
    from fmnist.training import epoch_order, tensor_view

    params = seed_params(epochs)
    configure_tensorflow(params.seed)
    train = load_split(PREPARED, "train")
    images = tf.reshape(tensor_view(train.images), (len(train.labels), IMAGE_PIXELS))
    labels = tf.cast(tensor_view(train.labels), tf.int32)
    widths, rate = [IMAGE_PIXELS, *params.hidden_units, CLASSES], params.dropout
    kernels = [
        tf.Variable(tf.random.stateless_uniform((a, b), (0, i), -0.1, 0.1))
        for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False))
    ]
    biases = [tf.Variable(tf.zeros((width,))) for width in widths[1:]]
    draws = tf.Variable(0, dtype=tf.int64)

    def step(x: tf.Tensor, y: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            for layer, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
                keep = tf.random.stateless_uniform(tf.shape(x), tf.stack([draws, layer])) >= rate
                x = tf.matmul(tf.where(keep, x / (1 - rate), 0.0), kernel) + bias
                x = tf.nn.relu(x) if layer < len(kernels) - 1 else x
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, x))
        for variable, gradient in zip(kernels + biases, tape.gradient(loss, kernels + biases), strict=True):
            variable.assign_sub(params.learning_rate * gradient)
        draws.assign_add(1)

    @tf.function
    def run(order: tf.Tensor) -> None:
        for start in tf.range(0, tf.size(order), params.batch_size):
            batch = order[start : start + params.batch_size]
            step(tf.gather(images, batch), tf.gather(labels, batch))

    for epoch in range(epochs):
        run(tf.constant(epoch_order(params.seed, epoch, len(train.labels))))
        print(f"epoch {epoch + 1}/{epochs}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, >= 2 (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; medians are reported (default 3)")
    parser.add_argument("--variant", choices=[*LEVERS, LEAN, FLOOR], help=argparse.SUPPRESS)  # a child process
    parser.add_argument(
        "--only", nargs="+", choices=[*LEVERS, LEAN, FLOOR], help=f"measure these variants only (with {REFERENCE})"
    )
    args = parser.parse_args()
    if args.variant == FLOOR:
        return matmul_floor(args.epochs)
    if args.variant == LEAN:
        return lean_step(args.epochs)
    if args.variant:
        return train_variant(LEVERS[args.variant], args.epochs)
    if not (PREPARED / "train.npz").is_file():
        raise SystemExit(f"bench.levers: {PREPARED}/train.npz is missing: run 'dvc repro prepare' first")

    print(f"- Machine: {describe_host()}\n- Kernels: {describe_kernels()}\n")
    names = [REFERENCE, *(name for name in args.only if name != REFERENCE)] if args.only else [*LEVERS, LEAN, FLOOR]
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for index in range(args.repeats):
        for name in runs:
            log(f"{name}, {args.epochs} epochs, run {index + 1}/{args.repeats}")
            command = [VENV_BIN / "python", "-m", "bench.levers", "--variant", name, "--epochs", str(args.epochs)]
            runs[name].append(run(command, REPO_ROOT))

    def weights(result: Run) -> str:
        return result.output.rsplit("weights sha256 ", 1)[1].split()[0]

    reference = {weights(result) for result in runs[REFERENCE]}
    reference_epoch = median([result.steady_epoch() for result in runs[REFERENCE]])
    print(f"### Levers: steady seconds per epoch (epochs 2..{args.epochs}), median of {args.repeats} (each run)\n")
    print("| Variant | s/epoch | vs `fit` | Weights as `fit`'s |")
    print("|---|---|---|---|")
    for name, results in runs.items():
        epoch_seconds = [result.steady_epoch() for result in results]
        if name == FLOOR:
            same = "(not training)"
            description = "matrix products only (floor), 1 thread"
        elif name == LEAN:
            same = "(not Keras's math)"
            description = "compiled epoch loop over a hand-written minimal step, 1 thread"
        else:
            digests = {weights(result) for result in results}
            same = "yes" if digests == reference and len(reference) == 1 else f"**no** ({len(digests)} distinct)"
            description = LEVERS[name].description
        speedup = reference_epoch / median(epoch_seconds)
        print(f"| {description} | {cell(epoch_seconds)} | {speedup:.2f}x | {same} |")
    print(f"\nThe reference (`fit`) runs gave {len(reference)} distinct final weights.")


if __name__ == "__main__":
    main()
