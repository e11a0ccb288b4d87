"""Fixtures: Python stubs generated from proto/roster/v1, and the real
`roster` binary serving on an ephemeral loopback port against SQLite and
PostgreSQL."""

import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROSTER_BIN = os.environ.get("ROSTER_BIN", str(ROOT / "target" / "debug" / "roster"))


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """Generates the roster.v1 Python package with grpcio-tools."""
    from grpc_tools import protoc
    import grpc_tools

    out = tmp_path_factory.mktemp("gen")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{ROOT / 'third_party'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    assert protoc.main(args) == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from roster.v1 import (  # noqa: E402
        email_address_service_pb2,
        email_address_service_pb2_grpc,
        phone_number_service_pb2,
        phone_number_service_pb2_grpc,
        session_service_pb2,
        session_service_pb2_grpc,
        sign_in_service_pb2,
        sign_in_service_pb2_grpc,
        user_pb2,
        user_service_pb2,
        user_service_pb2_grpc,
    )

    return {
        "user": user_pb2,
        "users": user_service_pb2,
        "users_grpc": user_service_pb2_grpc,
        "emails": email_address_service_pb2,
        "emails_grpc": email_address_service_pb2_grpc,
        "phones": phone_number_service_pb2,
        "phones_grpc": phone_number_service_pb2_grpc,
        "sessions": session_service_pb2,
        "sessions_grpc": session_service_pb2_grpc,
        "sign_in": sign_in_service_pb2,
        "sign_in_grpc": sign_in_service_pb2_grpc,
    }


def postgres_database(admin=None):
    """A new, empty database on the suite's PostgreSQL (or on `admin`)."""
    admin = admin or os.environ.get("ROSTER_TEST_POSTGRES_URL")
    if not admin:
        pytest.fail("ROSTER_TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts PostgreSQL")
    name = "roster_py_" + secrets.token_hex(6)
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    return admin.rsplit("/", 1)[0] + "/" + name


def _database_url(backend, data_dir):
    if backend == "sqlite":
        return f"sqlite://{data_dir}/roster.db"
    return postgres_database()


class Server:
    """The roster binary; `env` adds ROSTER_* settings. Its log lines are in
    `logs` once it stopped."""

    def __init__(self, backend, env=None, database_url=None, wait=True):
        self.dir = tempfile.TemporaryDirectory()
        self.logs = ""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "ROSTER_LOG_FORMAT": "json",
            "ROSTER_DATABASE_URL": database_url or _database_url(backend, self.dir.name),
            "ROSTER_DATA_DIR": self.dir.name,
            "ROSTER_SHUTDOWN_GRACE": "0s",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [ROSTER_BIN, "serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if wait:
            self.wait_serving()

    def wait_serving(self):
        """Reads the log until both ports are serving."""
        seen = []
        for line in self.process.stderr:
            seen.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            # The two ports report in either order.
            if event.get("message") == "serving HTTP":
                self.http_address = event["addr"]
            if event.get("message") == "serving gRPC":
                self.address = event["addr"]
            if hasattr(self, "address") and hasattr(self, "http_address"):
                break
        else:
            raise RuntimeError("roster exited before serving:\n" + "".join(seen))
        self._seen = seen

    def stop(self):
        self.process.terminate()
        _, rest = self.process.communicate(timeout=30)
        assert self.process.returncode == 0
        self.logs = "".join(self._seen) + rest
        self.dir.cleanup()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_s3():
    """An S3-compatible server (moto) on loopback, with a bucket; yields
    (endpoint, bucket)."""
    import boto3

    port = free_port()
    moto = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if moto.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="roster-images")
    yield s3, endpoint, "roster-images"
    moto.terminate()
    moto.wait(timeout=30)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    if not os.path.exists(ROSTER_BIN):
        pytest.fail(f"{ROSTER_BIN} does not exist: build it with `cargo build -p roster-server`")
    return request.param


@pytest.fixture
def server(backend):
    s = Server(backend)
    yield s
    s.stop()
