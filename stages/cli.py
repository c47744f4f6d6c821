"""The edge every stage shares: user errors, a full disk and signals become one line and an exit code."""

from __future__ import annotations

import ctypes
import errno
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
PR_SET_PDEATHSIG = 1
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
MEGABYTE = 1_000_000


class StageError(Exception):
    """A problem the user can fix (params, input files, sources): reported as one line."""


def _megabytes(size: int) -> str:
    return f"{size / 1000:.0f} kB" if size < MEGABYTE else f"{size / MEGABYTE:.1f} MB"


def space_needed(size: int, where: Path | None) -> str:
    """The "need about 0.8 MB free, 250 kB free now" of a message; the free space of `where`'s file system if given."""
    needed = f"need about {_megabytes(size)} free"
    if where is None:
        return needed
    existing = next(parent for parent in (where, *where.parents) if parent.exists())
    return f"{needed}, {_megabytes(shutil.disk_usage(existing).free)} free now"


class DiskFull(StageError):
    """The file system (or a quota) ran out of space while the stage wrote `what` to `path`."""

    def __init__(self, what: str, path: Path, size: int) -> None:
        super().__init__(what, path, size)
        self.what, self.path, self.size = what, path, size

    def __str__(self) -> str:
        # Measured when reported: by then the stage has removed its temporaries.
        return f"no space left on device writing {self.what} to {self.path}: {space_needed(self.size, self.path)}"


@contextmanager
def writing(what: str, path: Path, size: int) -> Iterator[None]:
    """Report a full disk inside the block as `DiskFull`: what was being written, where, about how big.

    Nested blocks name the innermost write. Code that runs while the error unwinds must not
    write (it would fail again and replace the error): train does not use `with Live(...)`.
    """
    try:
        yield
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        raise DiskFull(what, path, size) from error


class Interrupted(BaseException):
    """Raised in the main thread on SIGINT (Ctrl-C) or SIGTERM, so that cleanup runs."""


_received_signals: list[str] = []


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    """Remember the signal, then raise `Interrupted`.

    Python drops an exception raised while a `__del__` method or a weakref callback runs (it prints
    "Exception ignored" and carries on). Once, under `make test`, a train stage sent SIGINT ran on
    and exited 0. `raise_if_interrupted` raises the signal again before anything is published.
    """
    name = signal.Signals(signum).name
    _received_signals.append(name)
    raise Interrupted(name)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` if a signal arrived during this stage, even if its first raise was dropped."""
    if _received_signals:
        raise Interrupted(_received_signals[0])


def exit_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent (`dvc`, or a shell) dies, so no stage is orphaned.

    Killing only the `dvc` process otherwise leaves training running with nothing recording it.
    """
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_stage(name: str, body: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None) -> int:
    """Run a stage's body; a StageError, a full disk, Ctrl-C or SIGTERM prints one line and returns non-zero.

    Outputs are only ever published by `os.replace` at the very end (see `stages.atomic`), so any
    exit taken here leaves the previous outputs as they were.
    """
    _received_signals.clear()
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    exit_with_parent()
    try:
        body(argv)
    except StageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        print(f"{name}: error: {error}", file=sys.stderr)  # a write that no `writing` block names
        return EXIT_ERROR
    except Interrupted as interrupted:
        print(f"{name}: interrupted by {interrupted}; outputs left as they were", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
