"""Projects to sweep on the tiny dataset (conftest.use_tiny_dataset): a bare git `origin` and a directory remote."""

from __future__ import annotations

from pathlib import Path

from conftest import dvc, git, make_project, set_param, use_tiny_dataset


def sweep_project(root: Path, validation_images: int = 50) -> Path:
    """A tiny-dataset project with a bare git repository as `origin` (`root`/origin.git) and a directory as its
    default DVC remote (`root`/storage). Its own dataset directory and validation size: two projects made with
    different sizes share no stage's run."""
    root.mkdir()
    project = make_project(root / "project")
    use_tiny_dataset(project, root / "data")
    if validation_images != 50:
        set_param(project, "prepare.val_size", str(validation_images))
        git(project, "commit", "-qam", "validation size")
    git(root, "init", "-q", "--bare", "--initial-branch=main", "origin.git")
    git(project, "remote", "add", "origin", str(root / "origin.git"))
    git(project, "push", "-q", "origin", "HEAD:refs/heads/main")
    dvc(project, "remote", "add", "--local", "--default", "team", str(root / "storage"))
    return project
