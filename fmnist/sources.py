"""Fetch's logic: the four IDX files from the first source whose copy matches its pinned checksum.

Sources are tried in the order `fetch.sources` lists them: local mirror directories (Debian's
`dataset-fashion-mnist` package installs one) and base URLs of the upstream files. Mirrors may
recompress the `.gz` files (Debian did), so the pinned SHA-256 sums (`fetch.sha256`) are of the
decompressed IDX bytes, and the decompressed bytes are what is stored: every route yields the same DVC hash.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fmnist.errors import StageError
from fmnist.idx import RAW_FILES
from fmnist.params import require

RAW_FILE_NAMES = sorted(name for pair in RAW_FILES.values() for name in pair)
DOWNLOAD_TIMEOUT_SECONDS = 60
GZIP_MAGIC = b"\x1f\x8b"
FIX_HINT = (
    "install Debian's package with 'apt-get install dataset-fashion-mnist', "
    "or list a directory holding the four files under 'fetch.sources' in params.yaml"
)


@dataclass(frozen=True)
class FetchParams:
    SECTION: ClassVar[str] = "fetch"
    sources: tuple[str, ...]
    sha256: dict[str, str]  # of each decompressed file: the dataset's identity, so a small one can stand in

    def __post_init__(self) -> None:
        require(len(self.sources) > 0, "fetch.sources", self.sources, "a non-empty list of directories or URLs")
        require(all(self.sources), "fetch.sources", self.sources, "a list of non-empty strings")
        require(set(self.sha256) == set(RAW_FILE_NAMES), "fetch.sha256", self.sha256, f"keyed by {RAW_FILE_NAMES}")
        require(
            all(re.fullmatch("[0-9a-f]{64}", digest) for digest in self.sha256.values()),
            "fetch.sha256",
            self.sha256,
            "64 lowercase hex digits per file",
        )


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def read_source(source: str, name: str) -> bytes:
    """Bytes of `name` (gzipped or not) from a mirror directory or a base URL; OSError if absent."""
    if is_url(source):
        url = f"{source.rstrip('/')}/{name}.gz"
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            return response.read()
    directory = Path(source)
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate.read_bytes()
    raise FileNotFoundError(f"no {name}.gz or {name} in {directory}")


def decompress(data: bytes) -> bytes:
    return gzip.decompress(data) if data.startswith(GZIP_MAGIC) else data


def _describe(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    if isinstance(error, FileNotFoundError):
        return "file not found"
    return str(error) or type(error).__name__


def fetch_file(name: str, expected_sha256: str, sources: Sequence[str]) -> bytes:
    """The decompressed bytes of `name` from the first source whose copy matches the checksum."""
    failures = []
    for source in sources:
        try:
            data = decompress(read_source(source, name))
        except (OSError, EOFError, zlib.error) as error:
            failures.append(f"{source}: {_describe(error)}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest == expected_sha256:
            return data
        failures.append(f"{source}: checksum mismatch (sha256 {digest[:12]}…, expected {expected_sha256[:12]}…)")
    raise StageError(f"cannot fetch {name}: tried {'; '.join(failures)}. To fix: {FIX_HINT}")


def fetch_dataset(sources: Sequence[str], checksums: Mapping[str, str]) -> dict[str, bytes]:
    """All files in `checksums`, verified, held in memory so that a failure writes nothing."""
    return {name: fetch_file(name, digest, sources) for name, digest in checksums.items()}
