"""A sweep is safe by default: its LocalCluster is closed to everyone else. Real Dask processes throughout."""

from __future__ import annotations

import argparse
import http.client
import urllib.error
import urllib.request

import psutil
import pytest
from conftest import listening_sockets
from distributed import Client
from distributed.security import Security

from fmnist.sweep import driver


def http_status(port: int) -> int | None:
    """The status of `GET /info/main/workers.html` (Dask's page listing the workers), None if no HTTP answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info/main/workers.html", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, http.client.HTTPException):  # not HTTP: a Dask or TLS listener
        return None


def test_the_default_cluster_listens_on_loopback_only_speaks_tls_and_serves_no_pages() -> None:
    args = argparse.Namespace(scheduler=None, scheduler_file=None, workers=1)
    with driver.connect(args) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        address = client.scheduler.address
        sockets = {(address, port) for _, address, port in listening_sockets(psutil.Process())}
        assert len(sockets) >= 4  # scheduler, nanny and worker, each with its HTTP listener
        assert {ip for ip, _ in sockets} == {"127.0.0.1"}
        assert address.startswith("tls://127.0.0.1:")
        assert [port for _, port in sockets if http_status(port) == 200] == []  # no dashboard, no worker list
        port = address.rsplit(":", 1)[1]
        strangers = [{"address": f"tcp://127.0.0.1:{port}"}, {"address": address, "security": Security.temporary()}]
        for stranger in strangers:  # plain TCP, or TLS without this cluster's certificates
            with pytest.raises((OSError, TimeoutError)):
                Client(**stranger, timeout=3)
