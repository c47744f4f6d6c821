"""Atomic outputs: write under a hidden temporary name in the same directory, then `os.replace`.

DVC deletes a stage's outputs before running it and records nothing when the stage fails, so
an output that exists under its final name must always be complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from fmnist.runner import raise_if_interrupted

TEMP_PREFIX = ".tmp-"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _split_name(path: Path) -> tuple[str, str]:
    """("epoch-3", ".weights.h5") for epoch-3.weights.h5: temporaries keep every suffix (Keras checks them)."""
    suffix = "".join(path.suffixes)
    return path.name[: len(path.name) - len(suffix)], suffix


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def publish(staged: Path, path: Path) -> None:
    """Move a finished file or directory onto `path`, replacing whatever is there (never after a signal)."""
    raise_if_interrupted()
    files = [child for child in staged.rglob("*") if child.is_file()] if staged.is_dir() else [staged]
    for file in files:
        file.chmod(0o644)
        _fsync(file)
    if staged.is_dir():
        staged.chmod(0o755)
        if path.exists():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{_split_name(path)[0]}-old-"))
            os.replace(path, old / path.name)
            os.replace(staged, path)
            shutil.rmtree(old)
            return
    os.replace(staged, path)


@contextmanager
def _staged(path: Path, make_directory: bool) -> Iterator[Path]:
    """A fresh temporary beside `path`, published there on success and removed on any exception."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base, suffix = _split_name(path)
    prefix = f"{TEMP_PREFIX}{base}-"
    for stale in path.parent.glob(f"{prefix}*"):  # left by a killed earlier run
        _remove(stale)
    if make_directory:
        temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
    else:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(descriptor)
        temporary = Path(name)
    try:
        yield temporary
        publish(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def atomic_file(path: Path) -> AbstractContextManager[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any exception it is removed."""
    return _staged(path, make_directory=False)


def atomic_directory(path: Path) -> AbstractContextManager[Path]:
    """Yield a temporary directory to fill; on success it replaces `path`, on any exception it is removed."""
    return _staged(path, make_directory=True)
