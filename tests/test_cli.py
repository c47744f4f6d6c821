"""The stage edge: a signal stops a stage before it publishes, even when Python drops its exception;
a full disk is one line."""

from __future__ import annotations

import errno
import re
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from fmnist.atomic import atomic_file
from fmnist.errors import writing
from fmnist.runner import EXIT_ERROR, EXIT_INTERRUPTED, run_stage


class SignalsWhenCollected:
    """Sends SIGINT from `__del__`: the handler's exception is raised there, and Python drops it."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_whose_exception_was_dropped_still_stops_the_stage_before_it_publishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model.bin"
    output.write_text("previous")
    went_on: list[bool] = []

    def body(_argv: Sequence[str] | None) -> None:
        with atomic_file(output) as temporary:
            temporary.write_text("new")
            SignalsWhenCollected()  # collected at once; the Interrupted raised in __del__ is dropped
            went_on.append(True)

    assert run_stage("demo", body, []) == EXIT_INTERRUPTED
    assert went_on == [True]  # the drop really happened: the body ran past the signal
    assert output.read_text() == "previous"
    assert [path.name for path in tmp_path.iterdir()] == ["model.bin"]
    assert "demo: interrupted by SIGINT; outputs left as they were" in capsys.readouterr().err


def test_a_stage_leaves_the_signal_handlers_as_it_found_them() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert run_stage("demo", lambda _argv: None, []) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_full_disk_is_one_line_naming_what_where_and_about_how_much(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "model.keras"

    def body(_argv: Sequence[str] | None) -> None:
        with writing("the model", output, 2_500_000), atomic_file(output):
            raise OSError(errno.ENOSPC, "No space left on device")

    assert run_stage("demo", body, []) == EXIT_ERROR
    line = rf"demo: error: no space left on device writing the model to {re.escape(str(output))}: "
    assert re.fullmatch(line + r"need about 2\.5 MB free, [\d.]+ [kM]B free now\n", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_outside_any_writing_block_is_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def body(_argv: Sequence[str] | None) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded", "reports/x.json")

    assert run_stage("demo", body, []) == EXIT_ERROR
    assert capsys.readouterr().err == "demo: error: [Errno 122] Disk quota exceeded: 'reports/x.json'\n"
