"""How every stage runs: a user error, a full disk, Ctrl-C or SIGTERM becomes one line and an exit code."""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from fmnist.errors import NO_SPACE, StageError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
PR_SET_PDEATHSIG = 1
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "fish"})
STAGE_REPORT_VARIABLE = "FMNIST_STAGE_REPORT"


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
    """Ask Linux to send SIGTERM when the parent dies (usable as a `preexec_fn`)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_with_dvc() -> None:
    """End this stage with SIGTERM when the `dvc` that started it dies, so no stage is orphaned.

    Killing only `dvc` otherwise leaves training running with nothing recording it. DVC starts a stage through
    `$SHELL -c` (else /bin/sh): bash execs the stage, so `dvc` is the parent; dash stays between the two and outlives
    `dvc`, so there the shell's parent is watched too."""
    if not sys.platform.startswith("linux"):
        return
    exit_with_parent()
    parent = os.getppid()
    if _is_shell_command(parent):
        _terminate_when_gone(_parent_of(parent))


def _is_shell_command(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.path.basename(argv[0].decode(errors="replace")) in SHELLS and b"-c" in argv[1:]


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; the name may hold spaces


def _terminate_when_gone(pid: int) -> None:
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def wait() -> None:
        select.select([handle], [], [])  # readable once the process has exited
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="exit-with-dvc", daemon=True).start()


def run_stage(name: str, body: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None) -> int:
    """Run a stage's body; a StageError, a full disk, Ctrl-C or SIGTERM prints one line and returns non-zero.

    Outputs are only ever published by `os.replace` at the very end (see `fmnist.atomic`), so any
    exit taken here leaves the previous outputs as they were.
    """
    _received_signals.clear()
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    exit_with_dvc()
    try:
        body(argv)
    except StageError as error:
        return _failed(name, EXIT_ERROR, f"{name}: error: {error}")
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        return _failed(name, EXIT_ERROR, f"{name}: error: {error}")  # a write that no `writing` block names
    except Interrupted as interrupted:
        return _failed(name, EXIT_INTERRUPTED, f"{name}: interrupted by {interrupted}; outputs left as they were")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    report_outcome(name, "done", 0, "")
    return 0


def _failed(name: str, status: int, message: str) -> int:
    print(message, file=sys.stderr)
    report_outcome(name, "interrupted" if status == EXIT_INTERRUPTED else "error", status, message)
    return status


def report_outcome(stage: str, outcome: str, status: int, message: str) -> None:
    """Append the stage's outcome as one JSON line to the file `$FMNIST_STAGE_REPORT` names, if it is set.

    For a program that runs the stages through `dvc` (`fmnist.sweep.task`): which stages ran, and the one line
    that says why one failed, without parsing DVC's output. A report that cannot be written is skipped: the
    stage's own outcome stands."""
    path = os.environ.get(STAGE_REPORT_VARIABLE)
    if not path:
        return
    record = {"stage": stage, "outcome": outcome, "status": status, "message": message}
    try:
        with open(path, "a", encoding="utf-8") as report:
            report.write(json.dumps(record) + "\n")
    except OSError:
        pass
