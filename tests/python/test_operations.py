"""Running Roster in production, proved against the real binary: traces
reach an OTLP collector and continue the caller's trace; /metrics counts
real calls; SIGTERM drains a slow call and exits 0; readiness follows
PostgreSQL going away and coming back without a restart; two replicas on
one PostgreSQL behave as one service."""

import concurrent.futures
import io
import json
import os
import pathlib
import re
import secrets
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import ROOT, Server, free_port, postgres_database


def reason_of(err):
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def http_get(server, path):
    try:
        with urllib.request.urlopen(f"http://{server.http_address}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def health(channel, service=""):
    """grpc.health.v1.Health/Check: 1 SERVING, 2 NOT_SERVING
    (HealthCheckResponse field 1). The messages are encoded by hand."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    name = service.encode()
    response = check(bytes([0x0A, len(name)]) + name if name else b"", timeout=5)
    return response[1] if len(response) == 2 and response[0] == 0x08 else 0


def wait_until(condition, seconds=20, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- traces -----------------------------------------------------------------


class Collector:
    """An OTLP/gRPC trace collector on loopback: the spans it received."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans = []
        self.resources = []
        collector = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                for resource_spans in request.resource_spans:
                    collector.resources.append(resource_spans.resource)
                    for scope in resource_spans.scope_spans:
                        collector.spans.extend(scope.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0)


def attributes(span):
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value if value.HasField("string_value") else value.int_value
    return out


def test_traces_reach_an_otlp_collector_and_continue_the_callers_trace(stubs):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    collector = Collector()
    server = Server(
        "sqlite",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_SERVICE_NAME": "roster-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    password = "a password that must not leak " + secrets.token_hex(4)
    try:
        with grpc.insecure_channel(server.address) as channel:
            client = grpc_users.UserServiceStub(channel)
            created = client.CreateUser(
                users.CreateUserRequest(username="traced_user", password=password),
                metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
            ).user

        def rpc_span():
            return [s for s in collector.spans if s.name == "roster.v1.UserService/CreateUser"]

        wait_until(lambda: rpc_span(), what="the CreateUser span")
        [span] = rpc_span()
        assert span.trace_id.hex() == trace_id
        assert span.parent_span_id.hex() == parent_id
        assert span.kind == 2  # SPAN_KIND_SERVER
        attrs = attributes(span)
        assert attrs["rpc.system"] == "grpc"
        assert attrs["rpc.service"] == "roster.v1.UserService"
        assert attrs["rpc.method"] == "CreateUser"
        assert attrs["rpc.grpc.status_code"] == 0
        # Child spans: the store call and the password hash, in the trace.
        wait_until(
            lambda: {"store.insert_user", "password.hash"}
            <= {s.name for s in collector.spans if s.trace_id.hex() == trace_id},
            what="child spans",
        )
        children = [s for s in collector.spans if s.trace_id.hex() == trace_id and s is not span]
        assert all(s.parent_span_id == span.span_id for s in children if s.name == "store.insert_user")
        service_names = {
            kv.value.string_value for r in collector.resources for kv in r.attributes if kv.key == "service.name"
        }
        assert service_names == {"roster-under-test"}
        # Nothing secret in any span.
        for s in collector.spans:
            assert password not in str(s)
    finally:
        server.stop()
        collector.stop()
    # The call's JSON log line carries its trace and span ids.
    lines = [json.loads(line) for line in server.logs.splitlines() if line.startswith("{")]
    [created_line] = [e for e in lines if e.get("message") == "user created" and e.get("user_id") == created.id]
    rpc = created_line["spans"][0]
    assert rpc["trace_id"] == trace_id
    assert rpc["span_id"] == span.span_id.hex()
    assert password not in server.logs


# --- metrics ----------------------------------------------------------------


def metric(text, name, **labels):
    """The value of one sample, 0 when absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if got == labels:
            return float(match[3])
    return 0.0


def test_metrics_count_real_calls(server, stubs, backend):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    with grpc.insecure_channel(server.address) as channel:
        client = grpc_users.UserServiceStub(channel)
        for i in range(3):
            client.CreateUser(users.CreateUserRequest(username=f"metered_{i}", password="long enough password"))
        with pytest.raises(grpc.RpcError):
            client.GetUser(users.GetUserRequest(id="user_00000000000000000000000000"))
    status, text = http_get(server, "/metrics")
    assert status == 200
    service = "roster.v1.UserService"
    assert metric(text, "roster_grpc_requests_total", service=service, method="CreateUser", code="OK") == 3
    assert metric(text, "roster_grpc_requests_total", service=service, method="GetUser", code="NOT_FOUND") == 1
    assert (
        metric(text, "roster_grpc_request_duration_seconds_count", service=service, method="CreateUser") == 3
    )
    assert metric(text, "roster_grpc_requests_in_flight") == 0
    assert metric(text, "roster_db_pool_max_connections") > 0
    assert metric(text, "roster_db_pool_acquires_total") >= 4
    assert "roster_password_hashes" in text and "roster_db_pool_acquire_wait_seconds_total" in text
    # New users go to the database in groups of waiting inserts: one each
    # here, as the calls came one after another, none run again alone.
    assert metric(text, "roster_db_group_commits_total") == 3
    assert metric(text, "roster_db_group_commit_inserts_total") == 3
    assert metric(text, "roster_db_group_commit_inserts_alone_total") == 0
    assert metric(text, "roster_ready") == 1
    assert http_get(server, "/healthz")[0] == 200
    assert http_get(server, "/readyz") == (200, "ready\n")


def test_postgres_connections_follow_the_setting(stubs):
    """ROSTER_DATABASE_MAX_CONNECTIONS bounds a replica's connections: 4
    gives 2 for writes, 2 for reads and 2 for searches, and PostgreSQL
    sees no more than those and the one that merges the search index,
    however many calls come at once."""
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    url = postgres_database()
    server = Server("postgres", env={"ROSTER_DATABASE_MAX_CONNECTIONS": "4"}, database_url=url)
    try:
        with grpc.insecure_channel(server.address) as channel:
            client = grpc_users.UserServiceStub(channel)
            created = client.CreateUser(users.CreateUserRequest(username="pooled")).user
            with futures.ThreadPoolExecutor(16) as pool:
                reads = [pool.submit(client.GetUser, users.GetUserRequest(id=created.id)) for _ in range(64)]
                searches = [
                    pool.submit(
                        client.ListUsers,
                        users.ListUsersRequest(filter=users.UserFilter(query="pooled")),
                    )
                    for _ in range(64)
                ]
                assert all(r.result().user.id == created.id for r in reads)
                assert all(len(s.result().users) == 1 for s in searches)
        status, text = http_get(server, "/metrics")
        assert status == 200
        assert metric(text, "roster_db_pool_max_connections") == 6
        held = metric(text, "roster_db_pool_connections", state="idle") + metric(
            text, "roster_db_pool_connections", state="in_use"
        )
        assert 0 < held <= 6
        name = url.rsplit("/", 1)[1]
        admin = os.environ["ROSTER_TEST_POSTGRES_URL"]
        count = subprocess.run(
            ["psql", admin, "-Atc", f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert 0 < int(count) <= 7
    finally:
        server.stop()

    refused = Server("postgres", env={"ROSTER_DATABASE_MAX_CONNECTIONS": "1"}, database_url=url, wait=False)
    _, err = refused.process.communicate(timeout=30)
    assert refused.process.returncode != 0
    assert "database-max-connections" in err
    refused.dir.cleanup()


# --- shutdown ---------------------------------------------------------------


def test_sigterm_flips_health_drains_a_slow_call_and_exits_zero(stubs):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    server = Server("sqlite", env={"ROSTER_SHUTDOWN_GRACE": "3s"})
    release = threading.Event()
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(png, "PNG")
    with grpc.insecure_channel(server.address) as channel:
        client = grpc_users.UserServiceStub(channel)
        user = client.CreateUser(users.CreateUserRequest(username="slow_upload")).user
        assert health(channel) == 1

        def slow_upload():
            yield users.SetProfileImageRequest(upload=users.ProfileImageUpload(user_id=user.id))
            release.wait(30)
            yield users.SetProfileImageRequest(chunk=png.getvalue())

        call = client.SetProfileImage.future(slow_upload())
        wait_until(
            lambda: metric(http_get(server, "/metrics")[1], "roster_grpc_requests_in_flight") >= 1,
            10,
            "the upload in flight",
        )
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: health(channel) == 2, 5, "NOT_SERVING")
        assert http_get(server, "/readyz")[0] == 503
        # Liveness stays SERVING: the pod must not be restarted mid-drain.
        assert health(channel, "liveness") == 1
        # Past the grace period the listener is closed, but the call in
        # flight goes on.
        time.sleep(3.5)
        assert server.process.poll() is None
        release.set()
        result = call.result(timeout=30)
        assert result.user.has_image
    assert server.process.wait(timeout=30) == 0
    rest = server.process.stderr.read()
    assert "drained; server stopped" in rest and "database pool closed" in rest
    server.dir.cleanup()


# --- readiness and PostgreSQL -----------------------------------------------


def as_postgres(command):
    if os.geteuid() == 0:
        return subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", command], check=True)
    return subprocess.run(["sh", "-c", command], check=True)


class OwnPostgres:
    """A PostgreSQL cluster of this test's own, to stop and start."""

    def __init__(self):
        out = subprocess.run(
            ["bash", "-c", '. scripts/postgres.sh && start_postgres >/dev/null && echo "$PG_DIR $PG_BINDIR $ROSTER_TEST_POSTGRES_URL"'],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        self.dir, self.bindir, self.url = out
        self.port = self.url.rsplit(":", 1)[1].split("/")[0]

    def stop(self):
        as_postgres(f"{self.bindir}/pg_ctl -D {self.dir}/data -m fast -w stop >/dev/null")

    def start(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        as_postgres(
            f"{self.bindir}/pg_ctl -D {self.dir}/data -l {self.dir}/postgres.log -w -o {shlex.quote(options)} start >/dev/null"
        )

    def remove(self):
        as_postgres(f"{self.bindir}/pg_ctl -D {self.dir}/data -m immediate -w stop >/dev/null 2>&1 || true")
        subprocess.run(["rm", "-rf", self.dir], check=True)


def test_readiness_follows_postgres_down_and_back_without_a_restart(stubs):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    pg = OwnPostgres()
    server = None
    try:
        server = Server("postgres", database_url=postgres_database(pg.url))
        with grpc.insecure_channel(server.address) as channel:
            client = grpc_users.UserServiceStub(channel)
            created = client.CreateUser(users.CreateUserRequest(username="before_outage")).user
            pg.stop()
            wait_until(lambda: http_get(server, "/readyz")[0] == 503, 30, "readiness to fail")
            assert health(channel) == 2
            assert health(channel, "liveness") == 1
            # Calls fail fast and typed, not hang.
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                client.GetUser(users.GetUserRequest(id=created.id), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert reason_of(err.value) == "STORAGE_UNAVAILABLE"
            assert time.monotonic() - started < 1
            # The database returns: ready again, same process.
            pg.start()
            wait_until(lambda: http_get(server, "/readyz")[0] == 200, 20, "readiness to recover")
            assert health(channel) == 1
            assert client.GetUser(users.GetUserRequest(id=created.id)).user.username == "before_outage"
            assert server.process.poll() is None
    finally:
        if server:
            server.stop()
        pg.remove()


# --- replicas ---------------------------------------------------------------


def test_two_replicas_on_one_postgres_act_as_one_service(stubs):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    url = postgres_database()
    # Started together, so both run the migrations at once.
    a = Server("postgres", database_url=url, wait=False)
    b = Server("postgres", database_url=url, wait=False)
    a.wait_serving()
    b.wait_serving()
    try:
        with grpc.insecure_channel(a.address) as ca, grpc.insecure_channel(b.address) as cb:
            client_a, client_b = grpc_users.UserServiceStub(ca), grpc_users.UserServiceStub(cb)
            # What one writes, the next read on the other returns.
            made = client_a.CreateUser(users.CreateUserRequest(email_addresses=["shared@example.com"])).user
            assert client_b.GetUser(users.GetUserRequest(id=made.id)).user.email_addresses[0].email_address == (
                "shared@example.com"
            )
            # Uniqueness holds across replicas.
            with pytest.raises(grpc.RpcError) as err:
                client_b.CreateUser(users.CreateUserRequest(email_addresses=["shared@example.com"]))
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
            # And under a race: the same address created on both at once,
            # many times over, is created exactly once each time.
            for i in range(10):
                email = f"race{i}@example.com"
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    calls = [
                        pool.submit(c.CreateUser, users.CreateUserRequest(email_addresses=[email]))
                        for c in (client_a, client_b)
                    ]
                    outcomes = []
                    for call in calls:
                        try:
                            call.result()
                            outcomes.append("ok")
                        except grpc.RpcError as e:
                            outcomes.append(e.code())
                assert sorted(map(str, outcomes)) == sorted(["ok", str(grpc.StatusCode.ALREADY_EXISTS)]), outcomes
            count = client_a.CountUsers(users.CountUsersRequest()).total_count
            assert count == client_b.CountUsers(users.CountUsersRequest()).total_count == 11
    finally:
        a.stop()
        b.stop()
