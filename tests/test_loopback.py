"""The loopback endpoints (the worker's query endpoint, `spendstream store`) check who is asking."""

from __future__ import annotations

import http.client
import http.server
import io
import json
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from spendstream.sinks.loopback import SECRET_FILE, SecretUnreadable, ensure_secret, read_secret

pytestmark = pytest.mark.integration

QUERY = "/spendstream/query/"
INSERT = "/spendstream/insert/"


def test_the_secret_is_made_once_for_the_owner_alone(tmp_path) -> None:
    secret = ensure_secret(tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret(tmp_path / "data").get_secret_value() == secret.get_secret_value()  # kept across restarts
    assert read_secret(tmp_path / "data").get_secret_value() == secret.get_secret_value()
    assert secret.get_secret_value() not in repr(secret)


def test_a_secret_others_could_read_is_not_used(tmp_path) -> None:
    ensure_secret(tmp_path)
    (tmp_path / SECRET_FILE).chmod(0o644)
    with pytest.raises(SecretUnreadable, match="mode 0600.*delete it"):
        read_secret(tmp_path)
    with pytest.raises(SecretUnreadable, match="mode 0600"):
        ensure_secret(tmp_path)
    with pytest.raises(SecretUnreadable, match="does not exist"):
        read_secret(tmp_path / "elsewhere")


@dataclass
class Endpoint:
    kind: str
    port: int
    data_dir: Path

    @property
    def secret(self) -> str:
        return read_secret(self.data_dir).get_secret_value()

    def post(self, path: str, body: bytes, **headers: str) -> tuple[int, bytes]:
        """POST as a local process may: every header as given (None leaves it out)."""
        sent = {"Host": f"127.0.0.1:{self.port}", "Content-Type": "application/json",
                "Authorization": f"Bearer {self.secret}"}
        sent |= {name.replace("_", "-"): value for name, value in headers.items()}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", path, body, {k: v for k, v in sent.items() if v is not None})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def query(self, sql: str, *, write: bool = False, **headers: str) -> tuple[int, bytes]:
        body = json.dumps({"sql": sql, "params": {}, "format": "CSV", "write": write}).encode()
        return self.post(QUERY, body, **headers)

    def canary(self) -> str:
        status, out = self.query("SELECT sum(v) FROM canary")
        assert status == 200, out
        return out.decode().strip()


@pytest.fixture(scope="module", params=["store host", "worker"])
def endpoint(request, tmp_path_factory) -> Iterator[Endpoint]:
    """A `spendstream store` or a worker serving a fresh data directory, with a table `canary` whose v is 1."""
    from spendstream.demo.worker_process import StoreHostProcess, WorkerProcess
    from tests.conftest import worker_settings

    root = tmp_path_factory.mktemp("endpoint")
    if request.param == "store host":
        process = StoreHostProcess(root / "data", log_path=root / "store.log")
        process.start()
        port = process.port
    else:
        topic = f"test.usage.{uuid.uuid4().hex[:10]}"
        process = WorkerProcess(worker_settings(root / "data", topic), log_path=root / "worker.log",
                                bootstrap_servers=request.getfixturevalue("broker"))
        process.start()
        port = int(json.loads((root / "data" / "worker.json").read_text())["url"].rsplit(":", 1)[1])
    served = Endpoint(request.param, port, root / "data")
    try:
        for sql in ("CREATE TABLE canary (k UInt8, v UInt8) ENGINE = MergeTree ORDER BY k",
                    "INSERT INTO canary VALUES (1, 1)"):
            status, out = served.query(sql, write=True)
            assert status == 200, out
        yield served
    finally:
        process.stop()


def test_the_secret_sits_beside_the_endpoint_file_for_the_owner_alone(endpoint) -> None:
    assert stat.S_IMODE((endpoint.data_dir / SECRET_FILE).stat().st_mode) == 0o600
    assert endpoint.secret not in (endpoint.data_dir / "worker.json").read_text()
    assert endpoint.query("SELECT 1") == (200, b"1\n")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Bearer ", "Basic {secret}", "{secret}"])
def test_a_request_without_the_secret_is_refused(endpoint, authorization: str | None) -> None:
    header = None if authorization is None else authorization.format(secret=endpoint.secret)
    for write in (False, True):
        status, out = endpoint.query("ALTER TABLE canary UPDATE v = 0 WHERE 1 SETTINGS mutations_sync = 2",
                                     write=write, Authorization=header)
        assert status == 401 and b"Authorization: Bearer" in out
        assert endpoint.secret.encode() not in out
    assert endpoint.canary() == "1"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonp"])
def test_only_json_bodies_are_read(endpoint, content_type: str | None) -> None:
    status, out = endpoint.query("ALTER TABLE canary UPDATE v = 0 WHERE 1 SETTINGS mutations_sync = 2", write=True,
                                 Content_Type=content_type)
    assert status == 415 and b"application/json" in out
    assert endpoint.canary() == "1"
    assert endpoint.query("SELECT 2", Content_Type="application/json; charset=utf-8") == (200, b"2\n")


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1.nip.io:{port}", "127.0.0.1:{other}", "127.0.0.1",
                                  ""])
def test_a_host_that_is_not_this_loopback_endpoint_is_refused(endpoint, host: str) -> None:
    # a page on evil.example whose name was rebound to 127.0.0.1 still sends Host: evil.example
    status, out = endpoint.query("SELECT 1", Host=host.format(port=endpoint.port, other=endpoint.port + 1))
    assert status == 403 and b"Host" in out
    for loopback in ("localhost:{port}", "LOCALHOST:{port}", "127.0.0.1:{port}"):
        assert endpoint.query("SELECT 1", Host=loopback.format(port=endpoint.port)) == (200, b"1\n")


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:{port}", "null", ""])
def test_any_origin_is_refused(endpoint, origin: str) -> None:
    # browsers add Origin to cross-site requests; our clients never send one
    status, out = endpoint.query("ALTER TABLE canary UPDATE v = 0 WHERE 1 SETTINGS mutations_sync = 2", write=True,
                                 Origin=origin.format(port=endpoint.port))
    assert status == 403 and b"Origin" in out
    assert endpoint.canary() == "1"


@pytest.mark.parametrize("write", [False, True])
def test_several_statements_are_refused_and_none_runs(endpoint, write: bool) -> None:
    status, out = endpoint.query("SELECT 1; ALTER TABLE canary UPDATE v = 0 WHERE 1 SETTINGS mutations_sync = 2",
                                 write=write)
    assert status == 400 and b"one statement at a time" in out
    assert endpoint.canary() == "1"


def test_reads_are_read_only_and_stay_on_this_machine(endpoint, http_server) -> None:
    port, hits = http_server
    for sql in ("ALTER TABLE canary UPDATE v = 0 WHERE 1", "CREATE TABLE sneaky (a Int8) ENGINE = Memory",
                f"SELECT * FROM url('http://127.0.0.1:{port}/', 'LineAsString')",
                "SELECT * FROM file('/etc/passwd', 'LineAsString')", "SELECT file('/etc/passwd')"):
        status, out = endpoint.query(sql)
        assert status == 400 and b"read-only" in out and b"--write" in out, out
    assert hits == []
    assert endpoint.canary() == "1"
    assert endpoint.query("EXISTS TABLE sneaky") == (200, b"0\n")


@pytest.mark.parametrize("write", [False, True])
def test_a_failed_statement_leaves_the_session_clean(endpoint, write: bool) -> None:
    status, out = endpoint.query("SELECT throwIf(number = 300000) FROM numbers(1000000)", write=write)
    assert status == 400 and b"throwIf" in out
    assert endpoint.query("SELECT 42", write=write) == (200, b"42\n")


def test_a_forged_insert_is_refused(endpoint) -> None:
    if endpoint.kind != "store host":
        pytest.skip("only `spendstream store` serves inserts")
    from spendstream.agents.stages import process
    from spendstream.batches import SourceRecord
    from spendstream.pricing import Pricer
    from spendstream.sinks.rows import usage_table

    event_id = f"forged-{uuid.uuid4().hex}"
    forged = [{"event_id": event_id, "ts": "2026-11-01T12:00:00Z", "provider": "openai", "model": "gpt-4o",
               "input_tokens": 1_000, "output_tokens": 0}]
    table = usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(forged))], Pricer()))
    column = table.schema.get_field_index("total_cost")
    table = table.set_column(column, table.schema.field(column),
                             pa.array([Decimal("424242")], table.schema.field(column).type))
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    arrow = {"Content_Type": "application/vnd.apache.arrow.stream"}
    attempts = [({**arrow, "Authorization": None}, 401), ({**arrow, "Authorization": "Bearer wrong"}, 401),
                ({"Content_Type": "text/plain"}, 415), ({**arrow, "Origin": "https://evil.example"}, 403),
                ({**arrow, "Host": f"evil.example:{endpoint.port}"}, 403)]
    for headers, expected in attempts:
        status, out = endpoint.post(INSERT + "usage_events", sink.getvalue(), **headers)
        assert status == expected, out
    assert endpoint.query(f"SELECT count() FROM usage_events WHERE event_id = '{event_id}'") == (200, b"0\n")


def test_the_secret_is_never_logged(endpoint) -> None:
    log = endpoint.data_dir.parent / ("store.log" if endpoint.kind == "store host" else "worker.log")
    assert os.path.getsize(log) > 0 and endpoint.secret not in log.read_text(errors="replace")


def test_the_owner_may_still_write(endpoint) -> None:
    # the control for the tests above: the statement they send does change the canary when allowed
    status, out = endpoint.query("ALTER TABLE canary UPDATE v = 0 WHERE 1 SETTINGS mutations_sync = 2", write=True)
    assert status == 200, out
    assert endpoint.canary() == "0"
