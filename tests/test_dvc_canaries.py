"""Canaries: what plain DVC (3.67.1) does wrong that a module of fmnist.dvc_gaps works around. Each fails once DVC
changes, and says which workaround can then go. Tests elsewhere that pin such behaviour on the way to checking the
workaround carry the same `dvc_behaviour` marker: tests/test_sharing.py (pull from a wrong directory, `repro --pull`
after a bad param) and tests/test_disk_full.py (a full disk while DVC caches an output).
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import dvc
from sharing import Origin, object_path

pytestmark = pytest.mark.dvc_behaviour


def test_plain_push_run_cache_leaves_the_outputs_behind(origin: Origin) -> None:
    """Why `fmnist.dvc_gaps.share push` exists. If this fails, DVC uploads run-cache outputs itself and the tool
    can go."""
    plain = origin.repo.parent / "plain-remote"
    dvc(origin.repo, "remote", "add", "--local", "plain", str(plain))
    dvc(origin.repo, "push", "--run-cache", "-r", "plain")
    model_04 = hashlib.md5(origin.model_04).hexdigest()
    assert any(model_04 in path.read_text() for path in (plain / "runs").rglob("*") if path.is_file())
    assert not object_path(plain, model_04).exists()
    assert object_path(origin.storage, model_04).exists()
