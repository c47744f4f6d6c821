"""A throwaway OpenSSH server on 127.0.0.1 for the SSH remote tests: real sshd, own config, keys and port."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fmnist.runner import exit_with_parent

SSHD = Path("/usr/sbin/sshd")

requires_sshd = pytest.mark.skipif(
    not SSHD.is_file(), reason="needs OpenSSH's /usr/sbin/sshd (apt-get install openssh-server)"
)


@dataclass(frozen=True)
class SSHServer:
    port: int
    user: str
    key: Path  # private key in the server's authorized_keys
    home: Path  # a HOME whose .ssh/known_hosts holds the host key (dvc-ssh ignores it today; it may not tomorrow)
    store: Path  # an empty directory for DVC remotes, reachable over SFTP

    @property
    def url(self) -> str:
        return f"ssh://127.0.0.1{self.store}"


def keygen(path: Path) -> Path:
    """An unencrypted ed25519 key pair at `path` and `path`.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def free_port() -> int:
    """A TCP port nothing listens on (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_banner(port: int, sshd: subprocess.Popen[bytes], log: Path, timeout: float = 10) -> None:
    """Return once sshd greets a client, so that no test races its startup."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            raise RuntimeError(f"sshd exited with {sshd.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as client:
                if client.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on port {port} within {timeout} s:\n{log.read_text()}")


@contextmanager
def running_sshd(directory: Path) -> Iterator[SSHServer]:
    """sshd in the foreground (-D, logging to sshd.log via -e), stopped on exit; key authentication only."""
    host_key, client_key = keygen(directory / "host_ed25519"), keygen(directory / "client_ed25519")
    (directory / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    (directory / "home/.ssh").mkdir(parents=True)
    host_public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    (directory / "home/.ssh/known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    (directory / "store").mkdir()
    config = directory / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\n"
        f"HostKey {host_key}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        "StrictModes no\n"  # the temp dirs' modes are not sshd's business here
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:  # sshd run as root insists on it; Debian makes it only when the ssh service starts
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = directory / "sshd.log"
    with log.open("wb") as output:
        sshd = subprocess.Popen(  # dies with pytest even when pytest is killed and `finally` never runs
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=exit_with_parent,
        )
    try:
        wait_for_banner(port, sshd, log)
        yield SSHServer(port, getpass.getuser(), client_key, directory / "home", directory / "store")
    finally:
        sshd.terminate()
        try:
            sshd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sshd.kill()
            sshd.wait()
