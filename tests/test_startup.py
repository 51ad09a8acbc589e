"""Start-up waits for Kafka, ClickHouse and the embedded data directory, and gives up clearly."""

from __future__ import annotations

import http.server
import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from spendstream.localbroker import free_port
from spendstream.settings import Settings
from spendstream.startup import NotReady, Startup, StartupError, open_migrated_store, wait_for_kafka


class _FakeTime:
    """A clock that moves only when slept on: hours of waiting in a millisecond."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def _startup(fake: _FakeTime, timeout_s: float) -> Startup:
    return Startup(timeout_s=timeout_s, clock=fake.clock, sleep=fake.sleep)


def _not_ready_until(fake: _FakeTime, ready_at: float, result: str = "up"):
    calls = []

    def check() -> str:
        calls.append(fake.now)
        if fake.now < ready_at:
            raise NotReady("connection refused")
        return result

    return check, calls


def test_a_dependency_that_comes_late_is_waited_for_with_one_line_a_minute(caplog) -> None:
    fake = _FakeTime()
    check, calls = _not_ready_until(fake, ready_at=fake.now + 150)
    with caplog.at_level(logging.INFO, logger="spendstream.startup"):
        assert _startup(fake, timeout_s=300).wait_for("Kafka at 127.0.0.1:9092", check) == "up"
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]
    # at 0 s, after 60 s and after 120 s: the first at once, then one a minute however often it retries
    assert len(waiting) == 3 and len(calls) > 3 * len(waiting)
    assert waiting[0] == "waiting for Kafka at 127.0.0.1:9092: connection refused; retrying, giving up in 300 s"
    assert re.fullmatch(r"Kafka at 127.0.0.1:9092 answered after 15\d s", caplog.records[-1].getMessage())
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert max(gaps) <= 5.0 and len(set(gaps)) > 1  # capped backoff, jittered


def test_at_the_deadline_one_error_says_what_and_why_and_the_deadline_is_shared() -> None:
    fake = _FakeTime()
    startup = _startup(fake, timeout_s=30)
    check, _ = _not_ready_until(fake, ready_at=fake.now + 20)
    startup.wait_for("Kafka at k:9092", check)  # 20 of the 30 s spent here…
    never, calls = _not_ready_until(fake, ready_at=float("inf"))
    with pytest.raises(StartupError) as failed:
        startup.wait_for("ClickHouse at ch:8123", never)  # …leave 10 for this one
    assert str(failed.value).startswith("gave up waiting for ClickHouse at ch:8123 after 30 s: connection refused")
    assert "SPENDSTREAM_STARTUP_TIMEOUT_S" in str(failed.value) and failed.value.dependency == "ClickHouse at ch:8123"
    assert calls[0] >= 1_020 and fake.now == pytest.approx(1_030)  # until the shared deadline, not 30 s more


def test_zero_waits_forever_and_says_so(caplog) -> None:
    fake = _FakeTime()
    check, _ = _not_ready_until(fake, ready_at=fake.now + 24 * 3600)
    with caplog.at_level(logging.WARNING, logger="spendstream.startup"):
        assert _startup(fake, timeout_s=0).wait_for("ClickHouse at ch:8123", check) == "up"
    assert caplog.records[0].getMessage().endswith("retrying, with no deadline")
    # one a minute at most, and no fewer than one per minute plus one capped retry
    assert 24 * 3600 / (60 + 5) <= len(caplog.records) <= 24 * 60 + 1


def test_a_refusal_fails_at_once() -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        raise StartupError("ClickHouse at ch:8123 refused start-up: Authentication failed", dependency="ClickHouse")

    with pytest.raises(StartupError, match="Authentication failed"):
        Startup(timeout_s=300).wait_for("ClickHouse at ch:8123", check)
    assert calls == [1]


def test_a_bootstrap_setting_that_is_not_host_port_fails_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(StartupError, match="'kafka:nine' is not host:port"):
        wait_for_kafka(Startup(timeout_s=300), "kafka:9092,kafka:nine", {"t": 1})
    assert time.monotonic() - started < 1


def test_clickhouse_server_not_answering_is_waited_for_and_named_without_its_password(caplog, tmp_path) -> None:
    port = free_port()
    settings = Settings(clickhouse_url=f"http://spend:hunter2@127.0.0.1:{port}/spendstream", data_dir=tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(StartupError) as failed:
        open_migrated_store(Startup(timeout_s=1.5), settings)
    assert str(failed.value).startswith(f"gave up waiting for ClickHouse at 127.0.0.1:{port} after 1.5 s: "
                                        "connection refused")
    assert "hunter2" not in str(failed.value) + caplog.text
    assert [r.name for r in caplog.records] == ["spendstream.startup"]  # no driver warning per attempt


def test_a_bad_clickhouse_url_fails_at_once(tmp_path) -> None:
    settings = Settings(clickhouse_url="http://spend:hunter2@127.0.0.1:eighty/spendstream", data_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(StartupError, match="^cannot start: SPENDSTREAM_CLICKHOUSE_URL must look like http://") \
            as failed:
        open_migrated_store(Startup(timeout_s=300), settings)
    assert time.monotonic() - started < 1 and "hunter2" not in str(failed.value)


class _WrongPassword(http.server.BaseHTTPRequestHandler):
    """Answers every request as ClickHouse 25.8 answers a wrong password over HTTP (status, header, body)."""

    def do_POST(self) -> None:
        self.send_response(401)
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        body = (b"Code: 516. DB::Exception: spend: Authentication failed: password is incorrect, or there is no user "
                b"with such name. (AUTHENTICATION_FAILED) (version 25.8.1.1)\n")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


def test_wrong_clickhouse_credentials_fail_at_once(tmp_path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WrongPassword)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(clickhouse_url=f"http://spend:hunter2@127.0.0.1:{server.server_port}/spendstream",
                        data_dir=tmp_path)
    started = time.monotonic()
    try:
        with pytest.raises(StartupError, match=r"^cannot start: ClickHouse at 127.0.0.1:\d+: .*Authentication failed") \
                as failed:
            open_migrated_store(Startup(timeout_s=300), settings)
    finally:
        server.shutdown()
    assert time.monotonic() - started < 5 and "hunter2" not in str(failed.value)


# --- through the command line, against a real broker and real chdb -------------------------------------------------

def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    return env | {f"SPENDSTREAM_{k.upper()}": v for k, v in values.items()}


@pytest.mark.integration
def test_a_worker_started_before_its_broker_comes_up_when_the_broker_does_and_consumes(tmp_path) -> None:
    from spendstream.demo.worker_process import WorkerProcess
    from spendstream.emitter import Emitter
    from spendstream.localbroker import LocalBroker
    from spendstream.schemas import UsageEvent
    from tests.conftest import wait_for_count, worker_settings

    port = free_port()
    broker = LocalBroker(port=port)
    settings = worker_settings(tmp_path / "data", f"late.{port}")
    worker = WorkerProcess(settings, bootstrap_servers=f"127.0.0.1:{port}", log_path=tmp_path / "worker.log")
    log_path = tmp_path / "worker.log"

    def start_once_waited_for() -> None:  # not on a timer: a loaded machine may take longer to get there
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "waiting for Kafka" not in (
                log_path.read_text() if log_path.exists() else ""):
            time.sleep(0.1)
        broker.start()

    later = threading.Thread(target=start_once_waited_for, daemon=True)
    later.start()
    try:
        worker.start(timeout_s=90)  # returns once the worker serves queries: after the broker came
        with Emitter(bootstrap_servers=broker.bootstrap_servers, topic=settings.usage_topic,
                     register_atexit=False) as emitter:
            for i in range(50):
                emitter.emit(UsageEvent(event_id=f"late-{port}-{i}", provider="openai", model="gpt-4o-mini",
                                        input_tokens=100, output_tokens=10, team="search"))
            assert emitter.flush(30)
        stored = wait_for_count(worker.query_client(), "SELECT count() FROM usage_events FINAL", 50)
        assert stored == 50
    finally:
        later.join(timeout=100)
        worker.stop()
        broker.stop()
    log = log_path.read_text()
    assert log.count(f"waiting for Kafka at 127.0.0.1:{port}: connection refused; retrying, giving up in") == 1
    assert "Traceback" not in log


@pytest.mark.integration
def test_a_store_host_that_comes_up_later_is_waited_for(caplog, tmp_path) -> None:
    from spendstream.demo.worker_process import StoreHostProcess

    host = StoreHostProcess(tmp_path / "data", log_path=tmp_path / "store.log")
    later = threading.Timer(3.0, host.start)
    later.start()
    try:
        with caplog.at_level(logging.INFO, logger="spendstream.startup"):
            store = open_migrated_store(Startup(timeout_s=90), Settings(store_url=host.url, data_dir=tmp_path / "data"))
        assert store.query("SELECT count() FROM schema_migrations FINAL").scalar() > 0
    finally:
        later.cancel()
        later.join()
        host.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"waiting for the store host at {host.url}: connection refused; retrying, giving up")
    assert len(messages) == 2 and messages[1].startswith(f"the store host at {host.url} answered after ")


@pytest.mark.integration
def test_a_worker_gives_up_at_the_deadline_with_one_clear_line(tmp_path) -> None:
    port = free_port()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "spendstream", "worker"], capture_output=True, text=True,
                            timeout=60, env=_env(kafka_bootstrap=f"127.0.0.1:{port}", startup_timeout_s="3",
                                                 data_dir=str(tmp_path / "data")))
    assert result.returncode == 1
    assert 3 <= time.monotonic() - started < 30
    assert (f"spendstream worker: gave up waiting for Kafka at 127.0.0.1:{port} after 3 s: connection refused"
            in result.stderr)
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.integration
def test_a_bad_clickhouse_url_stops_a_worker_before_it_waits_for_kafka(tmp_path) -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "spendstream", "worker"], capture_output=True, text=True,
                            timeout=60, env=_env(kafka_bootstrap=f"127.0.0.1:{free_port()}",
                                                 clickhouse_url="http://spend:hunter2@127.0.0.1:eighty/db",
                                                 data_dir=str(tmp_path / "data")))
    assert result.returncode == 1 and time.monotonic() - started < 30  # not the 300 s default deadline
    assert result.stderr.strip() == ("spendstream worker: cannot start: SPENDSTREAM_CLICKHOUSE_URL must look like "
                                     "http://user:pass@host:8123/db")


@pytest.mark.integration
def test_a_worker_gives_up_on_clickhouse_without_showing_its_password(broker, tmp_path) -> None:
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "spendstream", "worker"], capture_output=True, text=True,
                            timeout=90, env=_env(kafka_bootstrap=broker, startup_timeout_s="3",
                                                 clickhouse_url=f"http://spend:hunter2@127.0.0.1:{port}/spendstream",
                                                 usage_topic=f"ch-away.{port}", data_dir=str(tmp_path / "data")))
    assert result.returncode == 1
    assert f"spendstream worker: gave up waiting for ClickHouse at 127.0.0.1:{port} after 3 s" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr + result.stdout


_HOLD = """
import sys, time
from spendstream.sinks.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
store.close()
"""


@pytest.mark.integration
def test_a_data_directory_held_by_an_exiting_process_is_waited_for(tmp_path) -> None:
    from spendstream.demo.worker_process import StoreHostProcess

    data_dir = tmp_path / "data"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(data_dir), "12"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # Held for longer than the deadline: one clear line, no traceback.
        refused = subprocess.run([sys.executable, "-m", "spendstream", "store"], capture_output=True, text=True,
                                 timeout=60, env=_env(data_dir=str(data_dir), startup_timeout_s="2"))
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert f"spendstream store: gave up waiting for the embedded data directory {data_dir} after 2 s: " \
               f"{data_dir} is open in another process" in refused.stderr
        assert holder.poll() is None, "the holder must still hold the directory for the next part"

        # Held until it is released: the store host waits and comes up.
        host = StoreHostProcess(data_dir, log_path=tmp_path / "store.log")
        host.start(timeout_s=90)
        try:
            assert holder.poll() == 0, "the store host answered while the directory was still held"
        finally:
            host.stop()
    finally:
        holder.kill()
        holder.wait()
    log = (tmp_path / "store.log").read_text()
    assert log.count(f"waiting for the embedded data directory {data_dir}: ") == 1
    assert "Cannot lock file" not in log  # chdb is not asked while the directory is held


def test_backoff_stays_capped_however_many_attempts_came_before() -> None:
    from spendstream.emitter.backoff import backoff_s

    # A writer retrying through a long outage, or start-up with no deadline, passes a thousand attempts.
    assert all(0 <= backoff_s(attempt, base_s=0.2, cap_s=10.0) <= 10.0 for attempt in (0, 63, 64, 1_100, 10**6))
