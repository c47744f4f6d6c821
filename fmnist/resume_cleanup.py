"""Which train resume states (`fmnist.resume`, in `.resume/train/<key>/`) are done with, and removing them.

A train run that finishes removes its own resume state (`fmnist.resume`). The others go by one rule
(`clean_states`), applied at the start of every train run (to every state but that run's own) and by the
check_params stage, which runs before train whenever params change:

1. a state whose run is the one dvc.lock records for train is removed: that run's result is in the workspace,
   because the run finished (here or elsewhere), or because DVC restored it from the run-cache without running
   train at all (so no train run could remove it then). Each state's `state.json` names its run for this
   comparison (`run`: the params, and the MD5 of each of train's deps, as dvc.lock writes them);
2. of the states left, one whose files were last written more than `MAX_STATE_AGE_DAYS` days ago is removed, and of
   the rest only the `KEEP_STATES` most recently written are kept: an interrupted run can be resumed for a week,
   whichever other rates were tried meanwhile, and `.resume/` never grows past a few models.

A run restored from the run-cache leaves its stale state until the next check_params or train run; both print one
line per removed state.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

RESUME_ROOT = Path(".resume/train")
STATE_FILE = "state.json"  # as fmnist.resume writes it
LOCK_FILE = Path("dvc.lock")
STAGE = "train"
MAX_STATE_AGE_DAYS = 7
KEEP_STATES = 3


def file_md5(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def run_identity(section: str, params: Mapping[str, Any], deps: Iterable[Path]) -> dict[str, Any]:
    """A run as dvc.lock records it: `section.key` params (as YAML reads them) and the MD5 of each dep by path."""
    values = json.loads(json.dumps(dict(params)))  # tuples become the lists YAML reads
    return {
        "params": {f"{section}.{key}": value for key, value in values.items()},
        "deps": {path.as_posix(): file_md5(path) for path in deps},
    }


def locked_run(lock: Path = LOCK_FILE, stage: str = STAGE) -> dict[str, Any] | None:
    """The run dvc.lock records for `stage`, in `run_identity`'s form; None if there is none."""
    try:
        entry = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage)
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(entry, dict):
        return None
    params: dict[str, Any] = {}
    for values in (entry.get("params") or {}).values():
        params |= values
    return {"params": params, "deps": {dep["path"]: dep.get("md5") for dep in entry.get("deps") or []}}


def _last_written(directory: Path) -> float:
    return max((path.stat().st_mtime for path in (directory, *directory.iterdir())), default=0.0)


def _read_run(directory: Path) -> Any:
    try:
        return json.loads((directory / STATE_FILE).read_text(encoding="utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        return None


def _same_run(run: Any, locked: Mapping[str, Any]) -> bool:
    """Whether dvc.lock records `run`: the same params, and the same MD5 for each of its deps (dvc.lock may list more,
    such as check_params' output, which train does not read)."""
    if not isinstance(run, dict) or run.get("params") != locked["params"] or not run.get("deps"):
        return False
    return all(locked["deps"].get(path) == md5 for path, md5 in run["deps"].items())


def clean_states(
    keep: Path | None = None, root: Path = RESUME_ROOT, lock: Path = LOCK_FILE, now: float | None = None
) -> list[Path]:
    """Remove the states the module docstring's rule says are done with, never `keep`; returns those removed."""
    if not root.is_dir():
        return []
    finished = locked_run(lock)
    now = time.time() if now is None else now
    states = [path for path in root.iterdir() if path.is_dir() and path != keep]
    removed = []
    for directory in states:
        if finished is not None and _same_run(_read_run(directory), finished):
            removed.append((directory, "its run's result is what dvc.lock records"))
    left = sorted((path for path in states if path not in {d for d, _ in removed}), key=_last_written, reverse=True)
    for index, directory in enumerate(left):
        if now - _last_written(directory) > MAX_STATE_AGE_DAYS * 86400:
            removed.append((directory, f"not written for more than {MAX_STATE_AGE_DAYS} days"))
        elif index >= KEEP_STATES:
            removed.append((directory, f"only the {KEEP_STATES} most recent other states are kept"))
    for directory, reason in removed:
        shutil.rmtree(directory, ignore_errors=True)
        print(f"resume: removed state {directory} ({reason})", flush=True)
    return [directory for directory, _ in removed]
