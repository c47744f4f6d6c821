"""The project's own source files a module runs: the module and, transitively, every project module it imports.

`dvc.yaml` must list exactly these as a stage's code deps (`tests/test_wiring.py`), and the train stage hashes
them into its resume key, so that a run never resumes from state that other code computed.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PROJECT_PACKAGES = ("stages", "fmnist")


def _module_path(module: str) -> Path | None:
    """The module's source file; None for packages, whose `__init__.py` files here hold only a docstring."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # `from fmnist.x import name`, read as a module `fmnist.x.name`
        return None
    if spec is None or spec.origin is None or spec.submodule_search_locations is not None:
        return None
    return Path(spec.origin)


def _imported_modules(path: Path) -> set[str]:
    """Project modules named by the imports of `path` (absolute imports only; the project uses no others)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from fmnist.sweep import task` names the module `fmnist.sweep.task`: try both readings
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in found if name.split(".")[0] in PROJECT_PACKAGES}


def code_closure(module: str) -> list[Path]:
    """Sorted source files of `module` and of every project module it imports, directly or not."""
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        path = _module_path(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        pending.extend(_imported_modules(path))
    return sorted(seen.values())
