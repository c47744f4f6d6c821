"""Fetch: every route (gzipped or not, mirror or HTTP) ends in the same verified bytes, or in one error."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DEBIAN_MIRROR, REPO_ROOT, idx_bytes, requires_debian_data, run_stage

from fmnist.errors import StageError
from fmnist.sources import fetch_dataset, fetch_file

COMMITTED_PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
LABELS = idx_bytes(np.arange(20, dtype=np.uint8) % 10)
CHECKSUMS = {"tiny-labels-idx1-ubyte": hashlib.sha256(LABELS).hexdigest()}


@pytest.fixture
def gz_mirror(tmp_path: Path) -> Path:
    mirror = tmp_path / "gz-mirror"
    mirror.mkdir()
    (mirror / "tiny-labels-idx1-ubyte.gz").write_bytes(gzip.compress(LABELS, compresslevel=1, mtime=1))
    return mirror


@pytest.fixture
def http_server(gz_mirror: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the gzipped mirror, like the upstream download site."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(gz_mirror))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_gzipped_and_plain_mirrors_and_http_give_the_same_bytes(tmp_path: Path, gz_mirror: Path, http_server: str):
    plain = tmp_path / "plain-mirror"
    plain.mkdir()
    (plain / "tiny-labels-idx1-ubyte").write_bytes(LABELS)
    # A differently compressed copy, as Debian's recompressed files are.
    regzipped = tmp_path / "regzipped"
    regzipped.mkdir()
    (regzipped / "tiny-labels-idx1-ubyte.gz").write_bytes(gzip.compress(LABELS, compresslevel=9, mtime=2))
    assert (regzipped / "tiny-labels-idx1-ubyte.gz").read_bytes() != (
        gz_mirror / "tiny-labels-idx1-ubyte.gz"
    ).read_bytes()

    routes = [[str(gz_mirror)], [str(plain)], [str(regzipped)], [http_server]]
    assert all(fetch_dataset(sources, CHECKSUMS) == {"tiny-labels-idx1-ubyte": LABELS} for sources in routes)


def test_a_copy_with_the_wrong_checksum_falls_through_to_the_next_source(tmp_path: Path, gz_mirror: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "tiny-labels-idx1-ubyte").write_bytes(LABELS[:-1] + b"\x09")
    assert (
        fetch_file("tiny-labels-idx1-ubyte", CHECKSUMS["tiny-labels-idx1-ubyte"], [str(corrupt), str(gz_mirror)])
        == LABELS
    )


def test_when_no_source_works_the_error_names_each_source_and_the_fix(tmp_path: Path, http_server: str) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "tiny-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    missing = tmp_path / "nowhere"
    sources = [str(missing), str(corrupt), f"{http_server}/no-such-dir", "http://127.0.0.1:9"]

    with pytest.raises(StageError) as error:
        fetch_file("tiny-labels-idx1-ubyte", CHECKSUMS["tiny-labels-idx1-ubyte"], sources)

    message = str(error.value)
    assert "\n" not in message
    assert f"{missing}: file not found" in message
    assert f"{corrupt}: " in message
    assert f"{http_server}/no-such-dir: HTTP 404" in message
    assert "http://127.0.0.1:9: cannot connect" in message
    assert "apt-get install dataset-fashion-mnist" in message and "fetch.sources" in message


def test_fetch_stage_with_no_working_source_exits_non_zero_and_writes_nothing(tmp_path: Path) -> None:
    fetch = COMMITTED_PARAMS["fetch"] | {"sources": [str(tmp_path / "empty")]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fetch": fetch}))
    result = run_stage("fetch", "data/raw", cwd=tmp_path)
    assert result.returncode == 1
    assert re.match(r"fetch: error: cannot fetch [a-z0-9-]+: tried ", result.stderr)
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
@requires_debian_data
def test_debian_files_match_the_pinned_checksums_of_the_decompressed_originals(tmp_path: Path) -> None:
    fetch = COMMITTED_PARAMS["fetch"] | {"sources": [str(DEBIAN_MIRROR)]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fetch": fetch}))
    result = run_stage("fetch", "data/raw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stored = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (tmp_path / "data/raw").iterdir()}
    assert stored == COMMITTED_PARAMS["fetch"]["sha256"]
