"""Dask beyond this machine for a sweep: TLS certificates, a scheduler on other hosts, Slurm (docs/cluster.md).

* `fmnist-sweep certs DIR` makes a certificate authority dedicated to one cluster and a certificate for each role
  (scheduler, worker, client), with `openssl`. Dask checks only that a peer's certificate is signed by the CA file
  (it switches host name checks off), so every holder of any of these certificates is trusted in every role: the
  CA must serve this cluster alone, and its key stays with whoever makes certificates.
* `--scheduler tls://HOST:PORT` or `--scheduler-file F` with `--tls-dir DIR` connects with the client certificate.
  An unencrypted scheduler on an address other than loopback is refused unless `--insecure` is given: whoever
  reaches it can run code as the workers.
* `--slurm` starts a `dask_jobqueue.SLURMCluster` whose workers are Slurm jobs; always over TLS, with the
  certificates of `--tls-dir` or, without it, throwaway ones that dask-jobqueue hands the jobs through a
  directory of mode 0700.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client
    from distributed.security import Security

CONNECT_SECONDS = 30
ROLES = ("scheduler", "worker", "client")
CA = "ca"
SLURM_DIR = Path.home() / ".cache/fashion-mnist-sweep/slurm"
SLURM_START_SECONDS = 120


class ClusterError(Exception):
    """A cluster that cannot be used as asked: one line, before anything is submitted."""


# ---- certificates --------------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["no output"]
        raise ClusterError(f"openssl {args[0]}: {lines[-1].strip()}")


def make_certs(directory: Path, days: int = 365, force: bool = False) -> list[Path]:
    """A CA (`ca.pem`, `ca.key`) and `scheduler`, `worker`, `client` certificates signed by it, EC P-256.

    Keys are written with mode 0600 and the directory is made 0700. Existing certificates are kept unless `force`:
    a new CA would lock out every host that has the old one."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    existing = [directory / f"{name}.{ext}" for name in (CA, *ROLES) for ext in ("pem", "key")]
    if not force and any(path.exists() for path in existing):
        raise ClusterError(f"{directory} already holds certificates: pass --force to replace them and the CA")
    old_umask = os.umask(0o077)
    try:
        key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-sha256")
        openssl(
            "req", "-x509", *key, "-days", str(days), "-subj", "/CN=fashion-mnist-sweep dask CA",
            "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )  # fmt: skip
        for role in ROLES:
            usage = "clientAuth" if role == "client" else "serverAuth,clientAuth"
            openssl("req", *key, "-subj", f"/CN=dask-{role}", "-keyout", f"{role}.key", "-out", f"{role}.csr",
                    cwd=directory)  # fmt: skip
            (directory / f"{role}.ext").write_text(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                f"extendedKeyUsage={usage}\n"
            )
            openssl(
                "x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")), "-days", str(days), "-sha256",
                "-extfile", f"{role}.ext", "-out", f"{role}.pem",
                cwd=directory,
            )  # fmt: skip
            (directory / f"{role}.csr").unlink()
            (directory / f"{role}.ext").unlink()
    finally:
        os.umask(old_umask)
    for path in existing:
        path.chmod(0o600 if path.suffix == ".key" else 0o644)
    return existing


def certs_main(args: argparse.Namespace) -> int:
    try:
        written = make_certs(args.directory, days=args.days, force=args.force)
    except ClusterError as error:
        print(f"certs: error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"{oct(path.stat().st_mode & 0o777)[2:]}  {path}")
    print(
        "certs: the scheduler host needs ca.pem and scheduler.{pem,key}, each worker host ca.pem and worker.{pem,key},"
        " the submitting clone ca.pem and client.{pem,key}; keep ca.key off the cluster"
    )
    return 0


def add_certs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="where to write ca.pem, ca.key and {scheduler,worker,client}.*")
    parser.add_argument("--days", type=int, default=365, help="validity of every certificate (default: 365)")
    parser.add_argument("--force", action="store_true", help="replace the certificates (and the CA) in DIRECTORY")


# ---- security ------------------------------------------------------------------------------------------------


def tls_security(directory: Path, roles: tuple[str, ...] = ("client",)) -> Security:
    """A Security that requires encryption, trusts `directory`/ca.pem and presents the given roles' certificates."""
    from distributed.security import Security

    files = {"ca": directory / "ca.pem"} | {
        f"{role}{ext}": directory / f"{role}.{ext[1:]}" for role in roles for ext in (".pem", ".key")
    }
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ClusterError(f"no {', '.join(missing)}: make them with `fmnist-sweep certs {directory}`")
    options = {"tls_ca_file": str(files["ca"])}
    for role in roles:
        options[f"tls_{role}_cert"] = str(files[f"{role}.pem"])
        options[f"tls_{role}_key"] = str(files[f"{role}.key"])
    return Security(require_encryption=True, **options)


def is_loopback(host: str) -> bool:
    """True if every address `host` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_address(address: str, security: Security | None, insecure: bool) -> None:
    """Refuse an unencrypted scheduler off loopback (unless `insecure`), and a tls:// one without certificates."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    encrypted = scheme == "tls"
    if encrypted and not (security and security.get_connection_args("client").get("ssl_context")):
        raise ClusterError(
            f"the scheduler {address} speaks TLS: pass --tls-dir DIR holding ca.pem, client.pem, client.key"
        )
    if encrypted or insecure:
        return
    host = parse_host_port(location)[0] if scheme in ("tcp", "ws", "wss") else location
    if not is_loopback(host):
        raise ClusterError(
            f"refusing the unencrypted scheduler {address}: anyone who reaches it can run code on the workers; "
            "start it with TLS (docs/cluster.md) and pass --tls-dir, or pass --insecure on a network you trust"
        )


def scheduler_address(scheduler: str | None, scheduler_file: str | None) -> str:
    if scheduler:
        return scheduler if "://" in scheduler else f"tcp://{scheduler}"
    path = Path(scheduler_file or "")
    if not path.is_file():
        raise ClusterError(f"no scheduler file {path}: start `dask scheduler --scheduler-file` first")
    try:
        return json.loads(path.read_text())["address"]
    except (ValueError, KeyError, TypeError):
        raise ClusterError(f"{path} is not a scheduler file: it has no 'address'") from None


def check_reachable(address: str, timeout: float, security: Security) -> None:
    """Fail at once where nothing listens (connection refused) or the host is unknown; Dask's client would retry
    those for its whole timeout. A slow network gets the timeout, here and then in the client."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parse_host_port(location)
    except ValueError:
        raise ClusterError(f"'{address}' is not a scheduler address, e.g. tls://HOST:8786") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except TimeoutError:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: no answer in {timeout:g} s") from None
    except OSError as error:  # refused, unknown host, no route
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {error.strerror or error}") from None
    try:
        asyncio.run(asyncio.wait_for(dask_handshake(address, security), timeout))
    except TimeoutError:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: no Dask answer in {timeout:g} s") from None
    except OSError as error:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {error}") from None


async def dask_handshake(address: str, security: Security) -> None:
    """Connect as a client does, handshake included: Dask's client waits for the handshake's reply without a
    timeout (distributed 2026.8.0, `distributed.comm.core.connect`), so a server that accepts and stays silent
    would hang the sweep for ever."""
    from distributed.comm import connect as comm_connect

    comm = await comm_connect(address, **security.get_connection_args("client"))
    await comm.close()


@contextmanager
def connect_scheduler(
    scheduler: str | None, scheduler_file: str | None, tls_dir: Path | None, insecure: bool, timeout: float
) -> Iterator[Client]:
    """A client of a running scheduler (an address or the file `dask scheduler --scheduler-file` wrote).

    Without `tls_dir` Dask's own configuration applies (`distributed.comm.tls.*`, e.g. from
    DASK_DISTRIBUTED__COMM__TLS__CA_FILE and …__CLIENT__CERT/KEY)."""
    from distributed import Client
    from distributed.security import Security

    address = scheduler_address(scheduler, scheduler_file)
    security = tls_security(tls_dir) if tls_dir else Security()
    check_address(address, security, insecure)
    check_reachable(address, timeout, security)
    try:
        client = Client(address, security=security, timeout=timeout)
    except OSError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {reason}") from None
    with client:
        yield client


# ---- Slurm ---------------------------------------------------------------------------------------------------


def slurm_cluster(args: argparse.Namespace):  # -> dask_jobqueue.SLURMCluster
    """A SLURMCluster of `args.jobs` single-threaded workers, each a Slurm job, its scheduler and every worker on
    127.0.0.1 (each listening socket, the HTTP ones included) and every connection over TLS."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ClusterError("--slurm needs dask-jobqueue: pip install 'fashion-mnist-dropout-dvc[sweep]'") from None

    base = Path(args.slurm_dir).expanduser()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    base.chmod(0o700)
    (base / "logs").mkdir(exist_ok=True)
    if args.tls_dir:
        security, extra = tls_security(args.tls_dir, ROLES), {}
    else:  # throwaway certificates; dask-jobqueue writes the worker's (0600) for the jobs to read, and removes them
        shared = Path(tempfile.mkdtemp(prefix="tls-", dir=base))
        security, extra = True, {"shared_temp_directory": str(shared)}
    host = "127.0.0.1"
    worker_args = ["--host", host, "--dashboard-address", f"{host}:0", "--no-dashboard"]
    return SLURMCluster(
        cores=1,
        processes=1,
        memory=args.slurm_memory,
        walltime=args.slurm_walltime,
        queue=args.slurm_partition,
        account=args.slurm_account,
        python=args.slurm_python,
        job_name="fmnist-sweep",
        security=security,
        protocol="tls://",
        scheduler_options={"host": host, "dashboard_address": f"{host}:0"},
        worker_extra_args=worker_args,
        job_script_prologue=args.slurm_prologue,
        log_directory=str(base / "logs"),
        local_directory=str(base / "dask-tmp"),
        **extra,
    )


def check_job_script(cluster, asked: str) -> None:
    """`sbatch --test-only` on the worker job script: a job Slurm would reject is one line, before any is queued."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="fmnist-sweep-job-") as script:
        script.write(cluster.job_script())
        script.flush()
        try:
            result = subprocess.run(["sbatch", "--test-only", script.name], capture_output=True, text=True)
        except FileNotFoundError:
            raise ClusterError("--slurm needs Slurm's sbatch on PATH") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.strip()] or ["no output"]
        raise ClusterError(f"Slurm refuses the worker job ({asked}): {errors[0].removeprefix('sbatch: error: ')}")


def slurm_job_ids(cluster, wanted: int, logs: Path) -> list[str]:
    """The Slurm job ids of the cluster's workers once all `wanted` jobs are submitted."""
    deadline = time.monotonic() + SLURM_START_SECONDS
    while time.monotonic() < deadline:
        ids = [job.job_id for job in cluster.workers.values() if getattr(job, "job_id", None)]
        if len(ids) >= wanted:
            return ids
        time.sleep(0.2)
    raise ClusterError(f"Slurm did not accept {wanted} worker jobs in {SLURM_START_SECONDS} s: see {logs}")


@contextmanager
def connect_slurm(args: argparse.Namespace) -> Iterator[Client]:
    from distributed import Client

    try:
        cluster = slurm_cluster(args)
    except (OSError, RuntimeError, ValueError) as error:
        raise ClusterError(f"cannot start the Slurm cluster: {str(error).splitlines()[0]}") from None
    try:
        partition = args.slurm_partition or "the default partition"
        check_job_script(cluster, f"1 core, {args.slurm_memory}, {args.slurm_walltime}, {partition}")
        print(f"sweep: Dask scheduler {cluster.scheduler_address}; submitting {args.slurm_jobs} Slurm jobs")
        cluster.scale(jobs=args.slurm_jobs)
        ids = slurm_job_ids(cluster, args.slurm_jobs, Path(args.slurm_dir).expanduser() / "logs")
        print(f"sweep: Slurm jobs {', '.join(sorted(ids, key=int))} (partition {args.slurm_partition or 'default'})")
        with Client(cluster) as client:
            yield client
    finally:
        try:
            cluster.close()  # cancels the jobs (scancel)
        except AssertionError:  # distributed asserts on workers whose job never started; nothing is left to cancel
            pass


# ---- the driver's options ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, where: argparse._MutuallyExclusiveGroup) -> None:
    where.add_argument("--slurm", action="store_true", help="run the workers as Slurm jobs (dask-jobqueue)")
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="certificates of `fmnist-sweep certs`: ca.pem and client.{pem,key} (all for --slurm)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="allow an unencrypted scheduler on an address other than loopback"
    )
    slurm = parser.add_argument_group("Slurm (with --slurm)")
    slurm.add_argument("--slurm-jobs", type=int, default=2, help="worker jobs, one core each (default: 2)")
    slurm.add_argument("--slurm-partition", help="partition (sbatch -p; default: the cluster's default)")
    slurm.add_argument("--slurm-account", help="account (sbatch -A)")
    slurm.add_argument("--slurm-walltime", default="02:00:00", help="each job's time limit (default: 02:00:00)")
    slurm.add_argument("--slurm-memory", default="4GB", help="each job's memory (default: 4GB)")
    slurm.add_argument(
        "--slurm-python",
        default=sys.executable,
        help="the jobs' Python, with this project installed (default: this one)",
    )
    slurm.add_argument(
        "--slurm-prologue", action="append", default=[], metavar="LINE", help="a shell line run before each worker"
    )
    slurm.add_argument(
        "--slurm-dir",
        default=str(SLURM_DIR),
        help=f"job logs and Dask scratch, on a shared disk (default: {SLURM_DIR})",
    )


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.scheduler or args.scheduler_file or getattr(args, "slurm", False))


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[Client]:
    """A client of the scheduler the options name, or of a Slurm cluster that lives as long as the sweep."""
    if getattr(args, "slurm", False):
        with connect_slurm(args) as client:
            yield client
    else:
        tls_dir, insecure = getattr(args, "tls_dir", None), getattr(args, "insecure", False)
        timeout = getattr(args, "timeout", CONNECT_SECONDS)
        with connect_scheduler(args.scheduler, args.scheduler_file, tls_dir, insecure, timeout) as client:
            yield client
