"""`dvc.yaml` declares, per stage, exactly the code, files and params keys the stage reads.

DVC only re-runs a stage when a declared dependency changes, so an undeclared one makes `dvc repro`
silently stale, and a declared-but-unused one makes it re-run for nothing.
"""

from __future__ import annotations

import ast
import shlex

import pytest
import yaml
from conftest import REPO_ROOT

import fmnist.code

DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
# check_params' output: a stage that reads params depends on it only to run after the check, not to read it.
ORDERING_DEPS = {"data/params-checked.json"}


def module_file(module: str) -> str:
    return module.replace(".", "/") + ".py"


def code_closure(entry: str) -> set[str]:
    """The project files `entry` runs, as `fmnist.code` finds them (the train stage's resume key hashes the same)."""
    module = entry.removesuffix(".py").replace("/", ".")
    return {str(path.relative_to(REPO_ROOT)) for path in fmnist.code.code_closure(module)}


def params_read(entry: str) -> set[str]:
    """Keys of the params classes the stage passes to `load_params`: SECTION plus each field name."""
    classes = {}
    for path in code_closure(entry):
        for node in ast.walk(ast.parse((REPO_ROOT / path).read_text())):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = node
    loaded = [
        call.args[0].id
        for call in ast.walk(ast.parse((REPO_ROOT / entry).read_text()))
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "load_params"
    ]
    keys = set()
    for name in loaded:
        body = classes[name].body
        section = next(n.value.value for n in body if isinstance(n, ast.AnnAssign) and n.target.id == "SECTION")
        fields = [n.target.id for n in body if isinstance(n, ast.AnnAssign) and "ClassVar" not in ast.unparse(n)]
        keys |= {f"{section}.{field}" for field in fields}
    return keys


def wiring_problems(stages: dict) -> list[str]:
    problems = []
    for name, stage in stages.items():
        command = shlex.split(stage["cmd"])
        if command[:2] != ["python", "-m"]:
            problems.append(f"{name}: cmd should be 'python -m stages.<name> ...'")
            continue
        entry, arguments = module_file(command[2]), command[3:]
        deps = set(stage.get("deps", []))
        code_deps = {dep for dep in deps if dep.endswith(".py")}
        if code_deps != code_closure(entry):
            problems.append(f"{name}: code deps {sorted(code_deps)} != imported {sorted(code_closure(entry))}")
        declared_params = set(stage.get("params", []))
        if declared_params != params_read(entry):
            problems.append(f"{name}: params {sorted(declared_params)} != read {sorted(params_read(entry))}")
        outs = {next(iter(out)) if isinstance(out, dict) else out for key in ("outs", "metrics", "plots")
                for out in stage.get(key, [])}  # fmt: skip
        data_deps = deps - code_deps - ORDERING_DEPS

        def covered(path: str, by: set[str]) -> bool:
            return any(path == p or path.startswith(p + "/") or p.startswith(path + "/") for p in by)

        problems += [
            f"{name}: argument {a} is neither a dep nor an out" for a in arguments if not covered(a, deps | outs)
        ]
        problems += [
            f"{name}: dep {d} is not passed to the command" for d in data_deps if not covered(d, set(arguments))
        ]
        problems += [f"{name}: out {o} is not passed to the command" for o in outs if not covered(o, set(arguments))]
    return problems


def test_every_stage_declares_exactly_what_it_reads() -> None:
    assert wiring_problems(DVC_YAML["stages"]) == []


@pytest.mark.parametrize(
    ("stage", "key", "change", "problem"),
    [
        ("train", "params", lambda ps: [p for p in ps if p != "train.dropout"], "train: params"),
        ("train", "params", lambda ps: ["train"], "train: params"),
        ("evaluate", "params", lambda ps: ["train.dropout"], "evaluate: params"),
        ("train", "deps", lambda ds: [d for d in ds if d != "fmnist/tensorflow_setup.py"], "train: code deps"),
        ("prepare", "deps", lambda ds: [*ds, "fmnist/tensorflow_setup.py"], "prepare: code deps"),
        ("evaluate", "deps", lambda ds: [d for d in ds if d != "models/model.keras"], "evaluate: argument"),
    ],
    ids=["undeclared-param", "whole-section", "unused-param", "undeclared-import", "unused-code", "undeclared-file"],
)
def test_the_check_catches_a_miswired_stage(stage: str, key: str, change, problem: str) -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    stages[stage][key] = change(stages[stage].get(key, []))
    assert any(line.startswith(problem) for line in wiring_problems(stages))


def test_every_stage_that_reads_params_runs_after_the_params_check() -> None:
    """fetch is ordered by its place in dvc.yaml only (see the comment there); the others by their deps."""
    stages = DVC_YAML["stages"]
    assert next(iter(stages)) == "check_params"
    checked = set(stages["check_params"]["params"])
    for name, stage in stages.items():
        if name != "check_params" and stage.get("params"):
            assert name == "fetch" or ORDERING_DEPS <= set(stage["deps"]), name
            assert set(stage["params"]) <= checked, name
    outs = stages["check_params"]["outs"]
    assert {next(iter(out)) if isinstance(out, dict) else out for out in outs} == ORDERING_DEPS


def test_only_the_params_module_opens_params_yaml() -> None:
    readers = [
        path.name
        for path in [*(REPO_ROOT / "stages").glob("*.py"), *(REPO_ROOT / "fmnist").rglob("*.py")]
        if any(
            isinstance(node, ast.Constant) and node.value == "params.yaml"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert readers == ["params.py"]


def test_fetch_and_prepare_do_not_import_tensorflow() -> None:
    for stage in ("fetch", "prepare"):
        assert "fmnist/tensorflow_setup.py" not in code_closure(f"stages/{stage}.py")
        source = "\n".join((REPO_ROOT / path).read_text() for path in code_closure(f"stages/{stage}.py"))
        assert "tensorflow" not in source and "keras" not in source


def test_the_code_closure_follows_imports_transitively() -> None:
    """An oracle read by hand from the imports, independent of `fmnist.code`: stages/prepare.py imports seven fmnist
    modules, which import only each other (atomic -> runner -> errors, splits -> dataset, params ...)."""
    assert code_closure("stages/prepare.py") == {
        "stages/prepare.py",
        *(f"fmnist/{name}.py" for name in ("atomic", "dataset", "errors", "idx", "params", "runner", "splits")),
    }
