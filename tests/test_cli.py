"""The stage edge: a signal stops a stage before it publishes, even when Python drops its exception."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from stages.atomic import atomic_file
from stages.cli import EXIT_INTERRUPTED, run_stage


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
