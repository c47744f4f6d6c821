"""A throwaway S3 server on 127.0.0.1 for the S3 remote tests: moto's server (`moto_server`), real HTTP, real botocore.

moto accepts any key until told otherwise; `running_moto` creates an IAM user with an access key and then turns
authentication on (`POST /moto-api/reset-auth`), so a wrong key or secret is refused as by AWS. moto keeps its
state in memory only: a restarted server is empty. To take the remote away mid-push and bring it back with its
objects, clients talk to it through `TCPProxy`, a forwarder in its own process that a test kills and restarts.

Run as a script, this module is that forwarder: `python s3server.py LISTEN_PORT TARGET_PORT`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
REGION = "us-east-1"
BUCKET = "team-dvc"
PREFIX = "fashion-mnist"  # remotes live under s3://BUCKET/PREFIX


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    key_id: str  # an IAM access key with s3:* on everything
    secret: str
    log: Path

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def client(self, endpoint: str | None = None):  # noqa: ANN201 - boto3's client type is generated
        import boto3

        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
        )  # fmt: skip

    def credentials_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret}


def wait_until_up(endpoint: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer at {endpoint} within {timeout} s") from None
            time.sleep(0.05)


def enable_authentication(endpoint: str) -> tuple[str, str]:
    """An IAM user allowed s3:*, its access key, then authentication on: only that key works from now on."""
    import boto3

    bootstrap = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "bootstrap",
                 "aws_secret_access_key": "bootstrap"}  # fmt: skip
    iam = boto3.client("iam", **bootstrap)
    iam.create_user(UserName="dvc")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="dvc", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="dvc")["AccessKey"]
    request = urllib.request.Request(  # the body is the number of requests still let through unauthenticated
        endpoint + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).close()
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextmanager
def running_moto(directory: Path, port: int | None = None, bucket: str | None = BUCKET) -> Iterator[S3Server]:
    """moto_server on 127.0.0.1 (a free port unless given), authentication on, `bucket` created; killed on exit."""
    from sshd import free_port

    from fmnist.runner import exit_with_parent

    directory.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port or free_port()}"
    log = directory / "moto.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]],
            stdout=output, stderr=subprocess.STDOUT, preexec_fn=exit_with_parent,
        )  # fmt: skip
    try:
        wait_until_up(endpoint, process, log)
        server = S3Server(endpoint, *enable_authentication(endpoint), log)
        if bucket:
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        process.kill()
        process.wait(timeout=10)


def object_md5s(server: S3Server, bucket: str = BUCKET, prefix: str = PREFIX) -> dict[str, str]:
    """Key -> md5 of the bytes stored, for every object under `prefix`, read back over HTTP (not through DVC)."""
    client = server.client()
    digests = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for entry in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            digests[entry["Key"]] = hashlib.md5(body).hexdigest()
    return digests


@dataclass(frozen=True)
class RemoteContents:
    objects: int  # under files/md5, each named by the md5 of its bytes
    run_records: int  # under runs/, each a YAML run record
    mismatched: list[str]  # objects whose bytes do not hash to their name, and records that do not parse


def verified_contents(server: S3Server, bucket: str = BUCKET, prefix: str = PREFIX) -> RemoteContents:
    """Every object of the DVC remote at s3://bucket/prefix re-hashed; every run record parsed."""
    import yaml

    client = server.client()
    objects, records, mismatched = 0, 0, []
    for key, digest in object_md5s(server, bucket, prefix).items():
        parts = key.removeprefix(prefix + "/").split("/")
        if parts[:2] == ["files", "md5"] and len(parts) == 4:
            objects += 1
            if digest != parts[2] + parts[3].removesuffix(".dir"):
                mismatched.append(key)
        elif parts[0] == "runs":
            records += 1
            record = yaml.safe_load(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            if not (isinstance(record, dict) and "outs" in record):
                mismatched.append(key)
        else:
            mismatched.append(key)  # nothing else belongs on a DVC remote
    return RemoteContents(objects, records, mismatched)


class TCPProxy:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target in its own process: kill it to cut every connection."""

    def __init__(self, port: int, target: int, log: Path) -> None:
        self.port, self.target, self.log = port, target, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> TCPProxy:
        from fmnist.runner import exit_with_parent

        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(self.port), str(self.target)],
                stdout=output, stderr=subprocess.STDOUT, preexec_fn=exit_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/moto-api/", timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"proxy on {self.port} did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _forward(listen: int, target: int) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_forward(int(sys.argv[1]), int(sys.argv[2])))
