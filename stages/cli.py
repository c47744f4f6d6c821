"""The edge every stage shares: user errors and signals become one line and an exit code."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
PR_SET_PDEATHSIG = 1


class StageError(Exception):
    """A problem the user can fix (params, input files, sources): reported as one line."""


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM so that cleanup runs as it does for Ctrl-C."""


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def exit_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent (`dvc`, or a shell) dies, so no stage is orphaned.

    Killing only the `dvc` process otherwise leaves training running with nothing recording it.
    """
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_stage(name: str, body: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None) -> int:
    """Run a stage's body; a StageError, Ctrl-C or SIGTERM prints one line and returns non-zero.

    Outputs are only ever published by `os.replace` at the very end (see `stages.atomic`), so any
    exit taken here leaves the previous outputs as they were.
    """
    signal.signal(signal.SIGTERM, _raise_interrupted)
    exit_with_parent()
    try:
        body(argv)
    except StageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except (KeyboardInterrupt, Interrupted) as signal_name:
        reason = str(signal_name) or "SIGINT"
        print(f"{name}: interrupted by {reason}; outputs left as they were", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
