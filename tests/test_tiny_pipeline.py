"""The whole pipeline, through the real `dvc` CLI, on the tiny dataset the tests write (conftest.tiny_project)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import dvc, git


def test_dvc_repro_runs_every_stage_on_a_tiny_dataset_and_a_rerun_runs_nothing(tiny_project: Path) -> None:
    first = dvc(tiny_project, "repro").stdout
    for stage in ("fetch", "prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first
    assert "prepare: wrote train 250, validation 50, test 100 images" in first
    metrics = json.loads((tiny_project / "reports/evaluation/metrics.json").read_text())["test"]
    assert metrics["accuracy"] > 0.5  # ten classes: chance is 0.1
    assert "Running stage" not in dvc(tiny_project, "repro").stdout
    git(tiny_project, "add", "-A")
    assert dvc(tiny_project, "status").stdout.strip() == "Data and pipelines are up to date."
