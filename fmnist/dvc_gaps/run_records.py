"""Run records (DVC's run-cache entries) in the local cache or on a remote: which objects they need, which are there.

A run record (`runs/<key[:2]>/<key>/<value>`, in the cache and on a remote alike) is a stage's lock entry: its
command, deps, params and outputs with their hashes. DVC restores a run only if every object the record lists is in
the local cache, but `dvc push --run-cache` uploads records without those objects (treeverse/dvc PR #10472), and
DVC's own collection of a record's objects raises `CollectCacheError` as soon as a directory output's `.dir` object
is missing. The functions here read records as plain files and check objects without ever raising for a missing one.
DVC has no public listing of run records; the layout and schema are those of the pinned DVC (`dvc/stage/cache.py`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fmnist.params import PARAMS_FILE

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc_data.hashfile.db import HashFileDB
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_objects.fs.base import FileSystem

RUNS = "runs"
DEFAULT_HASH, LEGACY_HASH = "md5", "md5-dos2unix"  # outputs of DVC 3, and of DVC 2 (kept in the legacy cache)
SHOWN_CHANGES = 3  # per record, in a one-line description


@dataclass(frozen=True)
class RunRecord:
    path: str  # relative to the cache's or remote's root: runs/<key[:2]>/<key>/<value>
    entry: Mapping[str, Any]  # the lock entry DVC saved

    def objects(self) -> list[HashInfo]:
        """The object of every output: cached outs, and the `cache: false` metrics the run-cache keeps as well."""
        from dvc_data.hashfile.hash_info import HashInfo

        return [
            HashInfo(DEFAULT_HASH if out.get("hash") == DEFAULT_HASH else LEGACY_HASH, out["md5"])
            for out in self.entry.get("outs", [])
            if out.get("md5")
        ]


@dataclass(frozen=True)
class Store:
    """Where run records live (a file system and the root that holds `runs/`), and the object databases beside them."""

    fs: FileSystem
    root: str
    odbs: Mapping[str, HashFileDB]  # by hash name

    def record_paths(self) -> list[str]:
        runs = self.fs.join(self.root, RUNS)
        if not self.fs.exists(runs):
            return []
        found = (self.fs.relpath(path, self.root) for path in self.fs.find(runs))
        # Skip the temporaries (`.<token>.tmp`) an interrupted save or copy leaves; keep the layout runs/ab/key/value.
        return sorted(
            self.fs.as_posix(path)
            for path in found
            if not self.fs.name(path).startswith(".") and len(Path(path).parts) == 4
        )

    def full_path(self, path: str) -> str:
        return self.fs.join(self.root, *path.split("/"))

    def records(self) -> list[RunRecord]:
        from dvc.schema import COMPILED_LOCK_FILE_STAGE_SCHEMA
        from voluptuous import Invalid

        records = []
        for path in self.record_paths():
            try:
                with self.fs.open(self.full_path(path), "r", encoding="utf-8") as handle:
                    entry = COMPILED_LOCK_FILE_STAGE_SCHEMA(yaml.safe_load(handle))
            except (OSError, yaml.YAMLError, Invalid):  # unreadable: DVC ignores (and deletes) such records too
                continue
            records.append(RunRecord(path, entry))
        return records


def local_store(repo: Repo) -> Store:
    legacy = repo.cache.legacy
    return Store(legacy.fs, legacy.path, {DEFAULT_HASH: repo.cache.local, LEGACY_HASH: legacy})


def remote_store(repo: Repo, remote: str | None) -> Store:
    """The remote `remote` (default: core.remote) as DVC's run-cache push and pull address it."""
    legacy = repo.cloud.get_remote_odb(remote, "push --run-cache", hash_name=LEGACY_HASH)
    return Store(legacy.fs, legacy.path, {DEFAULT_HASH: repo.cloud.get_remote_odb(remote), LEGACY_HASH: legacy})


def _tree_entries(odbs: Sequence[HashFileDB], directory: HashInfo) -> list[HashInfo] | None:
    """The objects a `.dir` object lists, read from the first database that has it; None if none has it."""
    from dvc_data.hashfile.tree import Tree

    for odb in odbs:
        if odb.exists(directory.value):
            try:
                tree = Tree.load(odb, directory)
            except (OSError, ValueError):
                continue
            return [hash_info for _, _, hash_info in tree if hash_info]
    return None


def record_objects(record: RunRecord, stores: Sequence[Store]) -> set[HashInfo]:
    """Every object of `record`, with the files of each directory output whose `.dir` one of `stores` holds.

    DVC's transfers need the files named: given only a `.dir` object, `push` uploads the `.dir` and not its files."""
    objects = set()
    for hash_info in record.objects():
        objects.add(hash_info)
        if hash_info.isdir:
            objects |= set(_tree_entries([store.odbs[hash_info.name] for store in stores], hash_info) or [])
    return objects


def missing_objects(record: RunRecord, stores: Sequence[Store]) -> set[str]:
    """The objects of `record` (with the files of its directories) found in none of `stores`' databases."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for hash_info in record_objects(record, stores):
        wanted[hash_info.name].add(hash_info.value)
    missing: set[str] = set()
    for name, oids in wanted.items():
        for store in stores:
            if oids:
                oids = oids - set(store.odbs.get(name, store.odbs[DEFAULT_HASH]).oids_exist(oids))
        missing |= oids
    return missing


def split_complete(
    records: Iterable[RunRecord], stores: Sequence[Store], workspace: Path | None = None
) -> tuple[list[RunRecord], list[RunRecord]]:
    """(records whose every object is in one of `stores`, the others); with `workspace`, matching workspace files of
    outputs found nowhere are first added to the first store (`add_workspace_files`)."""
    complete, incomplete = [], []
    for record in records:
        missing = missing_objects(record, stores)
        if missing and workspace is not None:
            add_workspace_files(record, stores[0], workspace, missing)
            missing = missing_objects(record, stores)
        (incomplete if missing else complete).append(record)
    return complete, incomplete


def add_workspace_files(record: RunRecord, store: Store, root: Path, missing: set[str]) -> None:
    """Add to `store` the workspace files of `record`'s file outputs whose objects are `missing` and whose bytes match.

    Those are the `cache: false` metrics: in git, so every clone has the current run's, but on a remote only if
    someone's push uploaded the run-cache's copies (a plain `dvc push --run-cache` does not), and DVC restores a run
    only from objects in the cache. A copy, never a link: git tracks the workspace file.
    """
    import hashlib

    for out in record.entry.get("outs", []):
        oid, path = out.get("md5"), root / out["path"]
        if oid in missing and not oid.endswith(".dir") and path.is_file():
            with open(path, "rb") as handle:
                if hashlib.file_digest(handle, "md5").hexdigest() != oid:
                    continue
            odb = store.odbs[DEFAULT_HASH if out.get("hash") == DEFAULT_HASH else LEGACY_HASH]
            odb.add(str(path), store.fs, oid, hardlink=False)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _lookup(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return KeyError  # a sentinel no params value equals
        document = document[part]
    return document


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _deps(entry: Mapping[str, Any]) -> dict[str, str | None]:
    return {dep["path"]: dep.get("md5") for dep in entry.get("deps", [])}


class Describer:
    """One-line descriptions of run records against the workspace: the stage and what differs from params.yaml.

    A record whose params are the workspace's (evaluate has none) is described by the deps that differ from
    dvc.lock, naming the record that produced such a dep ("models/model.keras of train.dropout=0.4").
    """

    def __init__(self, root: Path, records: Iterable[RunRecord]) -> None:
        dvc_yaml = _read_yaml(root / "dvc.yaml") or {}
        self.names = {stage.get("cmd"): name for name, stage in (dvc_yaml.get("stages") or {}).items()}
        self.params = {str(PARAMS_FILE): _read_yaml(root / PARAMS_FILE)}
        self.lock = (_read_yaml(root / "dvc.lock") or {}).get("stages") or {}
        self.producers = {
            (out["path"], out.get("md5")): record for record in records for out in record.entry.get("outs", [])
        }

    def stage(self, record: RunRecord) -> str:
        return self.names.get(record.entry.get("cmd"), repr(record.entry.get("cmd")))

    def changed_params(self, record: RunRecord) -> list[str]:
        changed = []
        for file, values in (record.entry.get("params") or {}).items():
            current = self.params.get(file) if file in self.params else _read_yaml(Path(file))
            changed += [f"{key}={_shown(value)}" for key, value in values.items() if _lookup(current, key) != value]
        return changed

    def changes(self, record: RunRecord, depth: int = 0) -> list[str]:
        changed = self.changed_params(record)
        if changed:
            return changed
        locked = _deps(self.lock.get(self.stage(record)) or {})
        for path, md5 in _deps(record.entry).items():
            if locked.get(path) != md5:
                producer = self.producers.get((path, md5))
                upstream = self.changes(producer, depth + 1) if producer and depth < 2 else []
                changed.append(f"{path} of {', '.join(upstream)}" if upstream else f"{path} changed")
        return changed

    def __call__(self, record: RunRecord) -> str:
        changes = self.changes(record)
        if not changes:
            return f"{self.stage(record)} (the workspace's params and inputs)"
        shown = changes[:SHOWN_CHANGES] + (["…"] if len(changes) > SHOWN_CHANGES else [])
        return f"{self.stage(record)} ({', '.join(shown)})"


def describe_all(root: Path, records: Sequence[RunRecord], context: Iterable[RunRecord] = ()) -> str:
    """'train (train.dropout=0.4), evaluate (models/model.keras of train.dropout=0.4)', in dvc.yaml's stage order."""
    describer = Describer(root, [*records, *context])
    order = {name: index for index, name in enumerate(describer.names.values())}
    described = sorted((order.get(describer.stage(record), len(order)), describer(record)) for record in records)
    return ", ".join(text for _, text in described)


def remove_record(store: Store, record: RunRecord) -> None:
    """Delete a record, then its key's and prefix's directories once empty (DVC restores a key's newest record)."""
    path = store.full_path(record.path)
    store.fs.rm_file(path)
    for directory in (store.fs.parent(path), store.fs.parent(store.fs.parent(path))):
        try:
            if store.fs.ls(directory):
                break
            store.fs.rmdir(directory)
        except OSError:
            break


def upload_records(source: Store, destination: Store, records: Iterable[RunRecord]) -> list[RunRecord]:
    """Copy `records` that `destination` lacks; returns those copied. Each copy is atomic on a directory remote."""
    from dvc_objects.fs.generic import copy

    copied = []
    for record in records:
        target = destination.full_path(record.path)
        if destination.fs.exists(target):
            continue
        destination.fs.makedirs(destination.fs.parent(target), exist_ok=True)
        copy(source.fs, source.full_path(record.path), destination.fs, target)
        copied.append(record)
    return copied


def all_objects(records: Iterable[RunRecord], stores: Sequence[Store]) -> set[HashInfo]:
    return {hash_info for record in records for hash_info in record_objects(record, stores)}
