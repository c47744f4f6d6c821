"""Fetch stage: the four original Fashion-MNIST IDX files, checksum-verified, stored decompressed.

Sources are tried in the order `fetch.sources` lists them: local mirror directories (Debian's
`dataset-fashion-mnist` package installs one) and base URLs of the upstream files. Mirrors may
recompress the `.gz` files (Debian did), so the pinned SHA-256 sums are of the decompressed IDX
bytes, and the decompressed bytes are what is stored: every route yields the same DVC hash.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from stages.atomic import atomic_directory
from stages.cli import StageError, run_stage, writing
from stages.params import load_params, require

# SHA-256 of the decompressed original files (60,000 training and 10,000 test images), computed
# from Debian's copies, whose decompressed bytes are upstream's.
FASHION_MNIST_SHA256: Mapping[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
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

    def __post_init__(self) -> None:
        require(len(self.sources) > 0, "fetch.sources", self.sources, "a non-empty list of directories or URLs")
        require(all(self.sources), "fetch.sources", self.sources, "a list of non-empty strings")


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


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="directory to write the decompressed IDX files to")
    args = parser.parse_args(argv)
    params = load_params(FetchParams)
    files = fetch_dataset(params.sources, FASHION_MNIST_SHA256)
    size = sum(len(data) for data in files.values())
    with writing("the raw files", args.output, size), atomic_directory(args.output) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)
    print(f"fetch: wrote {len(files)} verified files to {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("fetch", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
