"""Alert delivery against real local HTTP receivers: formats, per-destination schedules, isolation, redaction."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spendstream.alerting.attempt import post
from spendstream.alerting.delivery import AlertRouting, Notifier, Route
from spendstream.alerting.destinations import SIGNATURE_HEADER, TIMESTAMP_HEADER, Destination, Request, sign
from spendstream.alerting.redact import Redactor
from spendstream.schemas.alert import Alert
from spendstream.sinks.rows import alert_table
from spendstream.sinks.store import query_result

pytestmark = pytest.mark.integration
T = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
Answer = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


class Receiver:
    """Records every POST; answers from a script of (status, headers), then with ``answer`` (default 200 "ok")."""

    def __init__(self, script: list[tuple[int, dict[str, str]]] | None = None, port: int = 0,
                 answer: Answer | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.script = list(script or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                if receiver.script:
                    status, headers, reply = *receiver.script.pop(0), b"ok"
                elif answer is not None:
                    status, headers, reply = answer(self.path, dict(self.headers), body)
                else:
                    status, headers, reply = 200, {}, b"ok"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, _, body in self.requests]


class Stalling:
    """Accepts connections and never finishes an answer: silent, or dripping a header byte every ``drip_s``."""

    def __init__(self, drip_s: float | None = None) -> None:
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._drip_s = drip_s
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._stall, args=(conn,), daemon=True).start()

    def _stall(self, conn: socket.socket) -> None:
        with conn:
            if self._drip_s is not None:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
            while not self._stop.wait(self._drip_s or 0.1):
                if self._drip_s is not None:
                    try:
                        conn.sendall(b"a")
                    except OSError:
                        return

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


class Clock:
    """The notifier's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]  # nothing listens once it is closed: connection refused


def _alert(tag: str, n: int = 0, state: str = "firing", kind: str = "retry_storm") -> Alert:
    return Alert(kind=kind, severity="error", state=state, subject=f"feature=checkout-{tag}",
                 window_start=T, window_end=T + timedelta(minutes=5), observed=Decimal("42"), expected=Decimal("3"),
                 dedup_key=f"{kind}:checkout-{tag}:{n}", message=f"42 retries in 5 min, $3.10 burned ({tag})",
                 created_at=T + timedelta(minutes=5, seconds=n))


def _notifier(store, tag: str, *destinations: Destination, **kwargs) -> Notifier:
    routing = AlertRouting(destinations=list(destinations),
                           routes=[Route(destination=d.name, subjects=[f"checkout-{tag}"]) for d in destinations])
    return Notifier(store, routing, **kwargs)


def _states(store, destination: str) -> dict[str, dict]:
    return {r["dedup_key"]: r for r in query_result(
        store, "SELECT dedup_key, outcome, attempts, next_attempt_at, detail FROM alert_deliveries FINAL "
               "WHERE destination = {d:String}", {"d": destination}).dicts()}


def test_slack_gets_one_readable_block_kit_message_per_group(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag, n) for n in range(5)]))
        notifier = _notifier(embedded_store, tag, Destination(name=f"slack-{tag}", kind="slack",
                                                              url=receiver.url("/hooks/T000/B000/XXXX")))
        assert notifier.run_pass().delivered == 5
        again = notifier.run_pass()  # delivered once, never again
        assert (again.delivered, again.pending, again.exit_code) == (0, 0, 0)
    finally:
        receiver.close()
    (message,) = receiver.bodies()  # a storm of five alerts is one message with a count
    assert message["text"].endswith("5 retry storm alerts firing")
    assert message["blocks"][0]["type"] == "header"
    section = message["blocks"][1]
    assert f"feature=checkout-{tag}" in section["text"]["text"] and "$3.10 burned" in section["text"]["text"]
    assert {"*Observed*\n42", "*Expected*\n3"} <= {f["text"] for f in section["fields"]}


def test_pagerduty_triggers_and_resolves_with_the_dedup_key(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    destination = Destination(name=f"pd-{tag}", kind="pagerduty", url=receiver.url("/v2/enqueue"),
                              routing_key="R0UT1NGKEY")
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
        assert _notifier(embedded_store, tag, destination).run_pass().delivered == 1
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag, state="resolved")]))
        assert _notifier(embedded_store, tag, destination).run_pass().delivered == 1
    finally:
        receiver.close()
    trigger, resolve = receiver.bodies()
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == f"retry_storm:checkout-{tag}:0"
    assert trigger["routing_key"] == "R0UT1NGKEY" and trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["source"] == "spendstream" and "payload" not in resolve


def test_webhook_is_signed_with_hmac_sha256(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
        _notifier(embedded_store, tag, Destination(name=f"hook-{tag}", kind="webhook", url=receiver.url("/in"),
                                                   secret="s3cret")).run_pass()
    finally:
        receiver.close()
    ((_, headers, body),) = receiver.requests
    assert headers[SIGNATURE_HEADER] == "sha256=" + sign("s3cret", headers[TIMESTAMP_HEADER], body)
    assert headers[SIGNATURE_HEADER] != "sha256=" + sign("wrong", headers[TIMESTAMP_HEADER], body)
    assert json.loads(body)["alerts"][0]["dedup_key"] == f"retry_storm:checkout-{tag}:0"


def test_each_delivery_keeps_its_own_schedule_honouring_retry_after_and_a_400_is_final(embedded_store) -> None:
    tag, clock = uuid.uuid4().hex[:8], Clock()
    storm, anomaly = f"retry_storm:checkout-{tag}:0", f"spend_anomaly:checkout-{tag}:1"
    receiver = Receiver([(500, {}), (429, {"Retry-After": "7"}), (200, {}), (400, {})])
    name = f"hook-{tag}"
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag, 0, kind="retry_storm"),
                                                           _alert(tag, 1, kind="spend_anomaly")]))
        notifier = _notifier(embedded_store, tag, Destination(name=name, kind="webhook", url=receiver.url("/in")),
                             clock=clock)
        first = notifier.run_pass()   # storm: 500; the anomaly waits: its destination is failing right now
        assert (len(receiver.requests), first.pending, first.exit_code) == (1, 2, 75)
        assert _states(embedded_store, name)[storm]["outcome"] == "pending" and anomaly not in _states(
            embedded_store, name)
        notifier.run_pass()           # same instant: the storm is not due again; the anomaly's first try: 429
        assert len(receiver.requests) == 2
        retry_at = datetime.fromisoformat(_states(embedded_store, name)[anomaly]["next_attempt_at"])
        assert retry_at.replace(tzinfo=timezone.utc) == clock.now + timedelta(seconds=7)  # Retry-After honoured
        clock.advance(seconds=2)      # past the storm's first backoff (at most 1 s), before the anomaly's 7 s
        assert notifier.run_pass().delivered == 1 and len(receiver.requests) == 3
        clock.advance(seconds=6)
        last = notifier.run_pass()    # the anomaly again: 400, final
        clock.advance(hours=1)
        idle = notifier.run_pass()
    finally:
        receiver.close()
    assert (last.failed, last.exit_code, len(receiver.requests)) == (1, 1, 4)   # never tried after the 400
    assert (idle.delivered, idle.failed, idle.pending, idle.exit_code) == (0, 0, 0, 0)
    states = _states(embedded_store, name)
    assert (states[storm]["outcome"], states[storm]["attempts"]) == ("delivered", 2)
    assert (states[anomaly]["outcome"], states[anomaly]["attempts"], states[anomaly]["detail"]) == (
        "failed", 2, "HTTP 400: ok")


def test_no_alert_is_lost_while_the_receiver_is_down(embedded_store) -> None:
    tag, clock, port = uuid.uuid4().hex[:8], Clock(), _closed_port()
    destination = Destination(name=f"slack-{tag}", kind="slack", url=f"http://127.0.0.1:{port}/hook")
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag, n) for n in range(3)]))
    notifier = _notifier(embedded_store, tag, destination, clock=clock)
    down = notifier.run_pass()
    assert (down.delivered, down.pending, down.failed) == (0, 3, 0)
    assert "ConnectionRefusedError" in down.problems[destination.name]
    assert {s["outcome"] for s in _states(embedded_store, destination.name).values()} == {"pending"}
    receiver = Receiver(port=port)  # back, on the same address
    try:
        clock.advance(minutes=10)
        assert notifier.run_pass().delivered == 3  # the outbox still had them
    finally:
        receiver.close()
    assert len(receiver.requests) == 1 and "3 retry storm alerts" in receiver.bodies()[0]["text"]


def test_one_failing_destination_never_blocks_the_others(embedded_store) -> None:
    tag, clock = uuid.uuid4().hex[:8], Clock()
    broken = Receiver(answer=lambda path, headers, body: (500, {}, b"internal error"))
    pagerduty, webhook = Receiver(), Receiver()
    destinations = [
        Destination(name=f"slack-500-{tag}", kind="slack", url=broken.url("/services/T1/B1/X1")),
        Destination(name=f"slack-down-{tag}", kind="slack", url=f"http://127.0.0.1:{_closed_port()}/services/x"),
        Destination(name=f"hook-typo-{tag}", kind="webhook", url=webhook.url("/typo").replace("http:", "htps:")),
        Destination(name=f"pd-{tag}", kind="pagerduty", url=pagerduty.url("/v2/enqueue"), routing_key="R0UTE"),
        Destination(name=f"hook-{tag}", kind="webhook", url=webhook.url("/in")),
    ]
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag, n) for n in range(3)]))
    notifier = _notifier(embedded_store, tag, *destinations, clock=clock, pass_deadline_s=10)
    try:
        started = time.monotonic()
        report = notifier.run_pass()
        elapsed_s = time.monotonic() - started
        # Same instant: the failing destinations are not due again, the settled ones have nothing left.
        notifier.run_pass()
        requests_then = (len(broken.requests), len(pagerduty.requests), len(webhook.requests))
        clock.advance(hours=1)
        notifier.run_pass()  # due again: the 500 destination is retried on its own schedule
    finally:
        for receiver in (broken, pagerduty, webhook):
            receiver.close()
    assert elapsed_s < 5
    assert requests_then == (1, 3, 1)   # PagerDuty: one event per alert; the webhook: one message for three
    assert (report.delivered, report.failed, report.pending, report.exit_code) == (6, 3, 6, 1)
    assert len(broken.requests) == 2 and len(pagerduty.requests) == 3 and len(webhook.requests) == 1
    assert {p for p, _, _ in webhook.requests} == {"/in"}
    typo = _states(embedded_store, f"hook-typo-{tag}")
    assert {s["outcome"] for s in typo.values()} == {"failed"} and len(typo) == 3
    assert all(s["detail"] == "the url's scheme 'htps' is not http or https" for s in typo.values())
    assert {s["attempts"] for s in _states(embedded_store, f"slack-500-{tag}").values()} == {2}
    assert report.problems[f"slack-500-{tag}"] == "HTTP 500: internal error"


def test_a_destination_that_never_answers_costs_at_most_the_pass_deadline(embedded_store) -> None:
    tag, silent, pagerduty = uuid.uuid4().hex[:8], Stalling(), Receiver()
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
    notifier = _notifier(embedded_store, tag, Destination(name=f"silent-{tag}", kind="slack", url=silent.url("/h")),
                         Destination(name=f"pd-{tag}", kind="pagerduty", url=pagerduty.url("/e"), routing_key="K"),
                         pass_deadline_s=1.5, request_timeout_s=30)
    try:
        started = time.monotonic()
        report = notifier.run_pass()
        elapsed_s = time.monotonic() - started
    finally:
        silent.close()
        pagerduty.close()
    assert 1.4 < elapsed_s < 5  # far under the 30 s request timeout: it was cut to what the pass had left
    assert len(pagerduty.requests) == 1 and report.delivered == 1
    assert (report.pending, report.unfinished) == (1, 0)
    (state,) = _states(embedded_store, f"silent-{tag}").values()
    assert state["outcome"] == "pending" and "timed out" in state["detail"]


def test_a_receiver_dripping_its_answer_cannot_hold_the_pass(embedded_store) -> None:
    tag, drip = uuid.uuid4().hex[:8], Stalling(drip_s=0.2)
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
    notifier = _notifier(embedded_store, tag, Destination(name=f"drip-{tag}", kind="webhook", url=drip.url("/h")),
                         pass_deadline_s=1.0)
    try:
        started = time.monotonic()
        report = notifier.run_pass()  # each byte comes within the socket timeout: only the deadline ends it
        elapsed_s = time.monotonic() - started
        again = notifier.run_pass()   # its request is still out: no second one piles on
        connections = drip.connections
    finally:
        drip.close()
    assert elapsed_s < 5  # the deadline and its grace, not the drip
    assert (report.unfinished, report.pending, report.delivered) == (1, 1, 0)
    assert (again.pending, connections) == (1, 1)
    assert _states(embedded_store, f"drip-{tag}") == {}  # nothing recorded as sent: it will be sent again


def test_rate_limit_leaves_the_rest_for_a_later_pass(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag, 0, kind="retry_storm"),
                                                       _alert(tag, 1, kind="spend_anomaly")]))
    destination = Destination(name=f"hook-{tag}", kind="webhook", url=receiver.url("/in"), max_per_minute=1)
    try:
        report = _notifier(embedded_store, tag, destination).run_pass()
    finally:
        receiver.close()
    assert (len(receiver.requests), report.delivered, report.pending, report.exit_code) == (1, 1, 1, 75)


def _echo(status: int) -> Answer:
    """A receiver that quotes what it got in its error, as some do."""
    def answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        routing_key = json.loads(body).get("routing_key", "")
        text = (f'{{"error": "invalid_token", "path": "{path}", "routing_key": "{routing_key}", '
                f'"auth": "{headers.get("Authorization", "")}", "echo": "{routing_key} at {path}"}}')
        return status, {}, text.encode()
    return answer


def test_secrets_a_receiver_echoes_are_neither_stored_nor_logged(embedded_store, caplog) -> None:
    tag, echo = uuid.uuid4().hex[:8], Receiver(answer=_echo(400))
    secrets = ["T0SECRET", "B0SECRET", "xyzzyTOKEN42", "ROUTINGKEY0123456789", "q1w2e3r4t5", "SEGSECRET9"]
    destinations = [
        Destination(name=f"slack-{tag}", kind="slack", url=echo.url("/services/T0SECRET/B0SECRET/xyzzyTOKEN42")),
        Destination(name=f"pd-{tag}", kind="pagerduty", url=echo.url("/v2/enqueue"),
                    routing_key="ROUTINGKEY0123456789"),
        Destination(name=f"hook-{tag}", kind="webhook", url=echo.url("/in?token=q1w2e3r4t5")),
        # http.client quotes the path of a URL it refuses.
        Destination(name=f"bad-{tag}", kind="webhook", url=echo.url("/SEGSECRET9 x")),
    ]
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
    try:
        with caplog.at_level("DEBUG"):
            report = _notifier(embedded_store, tag, *destinations).run_pass()
    finally:
        echo.close()
    assert (report.failed, len(echo.requests)) == (4, 3)
    sent = "".join(path + body.decode() for path, _, body in echo.requests)
    assert all(s in sent for s in ("xyzzyTOKEN42", "ROUTINGKEY0123456789", "q1w2e3r4t5"))  # and echoed back
    stored = embedded_store.query_text(
        "SELECT * FROM alert_deliveries FINAL WHERE destination LIKE {p:String}", {"p": f"%-{tag}"}, fmt="TSV")
    shown = stored + caplog.text + json.dumps(report.problems)
    for secret in secrets:
        assert secret.lower() not in shown.lower(), secret
    assert "HTTP 400" in stored and "invalid_token" in stored and "InvalidURL" in stored
    assert "SECRET" not in repr(destinations[0]) + str(destinations[0].model_dump())


def test_an_authorization_value_echoed_back_is_redacted() -> None:
    echo = Receiver(answer=_echo(401))
    try:
        # A bare token, not "Bearer …": only knowing the header's value can find it in the echo.
        attempt = post(Request(echo.url("/in"), b"{}", {"Authorization": "s3kr1t-abc.def"}), timeout_s=5,
                       redactor=Redactor([]))
    finally:
        echo.close()
    assert echo.requests[0][1]["Authorization"] == "s3kr1t-abc.def"
    assert attempt.result == "refused" and attempt.reason.startswith("HTTP 401")
    assert "s3kr1t" not in attempt.reason and "abc.def" not in attempt.reason


_SEED = """import sys
from datetime import datetime, timezone
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from spendstream.sinks.rows import alert_table
from spendstream.schemas.alert import Alert
s = EmbeddedStore(sys.argv[1]); migrate(s)
t = datetime(2026, 11, 20, tzinfo=timezone.utc)
s.insert_arrow('alerts', alert_table([Alert(kind='budget_burn', severity='warning', state='firing',
    subject='team=search', window_start=t, window_end=t, dedup_key='budget:search:2026-11:80',
    message='80 % of the monthly budget used', created_at=t)]))
s.close()
"""


def _notify_once(tmp_path, destinations: list[dict], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    data, routes = tmp_path / "data", tmp_path / "routes.yaml"
    routes.write_text(json.dumps({"destinations": destinations,  # JSON is YAML too
                                  "routes": [{"destination": d["name"], "kinds": ["budget_burn"]}
                                             for d in destinations]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env |= {"SPENDSTREAM_DATA_DIR": str(data), "SPENDSTREAM_ALERT_ROUTES": str(routes)}
    subprocess.run([sys.executable, "-c", _SEED, str(data)], env=env, check=True, timeout=60)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "spendstream", "notify", "--once", *args], env=env,
                            capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


def test_notify_command_delivers_from_the_outbox(tmp_path) -> None:
    receiver = Receiver()
    try:
        result, _ = _notify_once(tmp_path, [{"name": "chat", "kind": "slack", "url": receiver.url("/hook")}])
    finally:
        receiver.close()
    assert result.returncode == 0, result.stderr
    assert "delivered 1 alert(s)" in result.stdout
    assert "budget burn firing: team=search" in receiver.bodies()[0]["text"]


def test_notify_once_returns_promptly_while_destinations_fail_and_says_what_is_left(tmp_path) -> None:
    broken = Receiver(answer=lambda path, headers, body: (500, {}, b"rollup_error"))
    silent, pagerduty, webhook = Stalling(), Receiver(), Receiver()
    try:
        result, elapsed_s = _notify_once(tmp_path, [
            {"name": "slack-500", "kind": "slack", "url": broken.url("/services/T9/B9/SECRETPATH")},
            {"name": "slack-down", "kind": "slack", "url": f"http://127.0.0.1:{_closed_port()}/services/SECRETPATH"},
            {"name": "slack-silent", "kind": "slack", "url": silent.url("/services/SECRETPATH")},
            {"name": "hook-typo", "kind": "webhook", "url": webhook.url("/SECRETPATH").replace("http:", "htps:")},
            {"name": "oncall", "kind": "pagerduty", "url": pagerduty.url("/v2/enqueue"), "routing_key": "SECRETKEY"},
            {"name": "audit", "kind": "webhook", "url": webhook.url("/in"), "secret": "s3cret"},
        ], "--deadline", "3")
    finally:
        for server in (broken, silent, pagerduty, webhook):
            server.close()
    assert result.returncode == 1, result.stdout + result.stderr  # one delivery failed for good
    assert elapsed_s < 30  # process start and the store included; the pass itself is cut at 3 s
    assert len(pagerduty.requests) == 1 and [p for p, _, _ in webhook.requests] == ["/in"]
    assert "delivered 2 alert(s)" in result.stdout and "1 delivery(ies) failed for good" in result.stdout
    assert "3 delivery(ies) pending" in result.stdout and "slack-500: HTTP 500: rollup_error" in result.stdout
    assert "destination 'hook-typo' cannot work: the url's scheme 'htps'" in result.stderr
    assert "SECRET" not in result.stdout + result.stderr


_UPGRADE = """import sys
import spendstream.sinks.migrations as m
from spendstream.sinks.embedded import EmbeddedStore
s = EmbeddedStore(sys.argv[1])
every = m.MIGRATIONS
m.MIGRATIONS = tuple(x for x in every if x.version < 9)
m.migrate(s)
s.command("INSERT INTO alert_deliveries VALUES ('chat', 'k1', 'firing', 'failed', "
          "'HTTP 403: invalid_token /services/T0OLD/B0OLD/OLDTOKEN', now64(3)), "
          "('chat', 'k2', 'firing', 'delivered', '', now64(3))")
m.MIGRATIONS = every
print(m.migrate(s), m.migrate(s))
print(s.query_text("SELECT dedup_key, outcome, attempts, next_attempt_at, detail FROM alert_deliveries FINAL "
                   "ORDER BY dedup_key", fmt="TSV"), end="")
s.close()
"""


def test_an_existing_outbox_upgrades_in_place_and_loses_the_bodies_that_could_hold_secrets(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", _UPGRADE, str(tmp_path / "data")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    applied, *rows = result.stdout.splitlines()
    now_applied, again = applied.split("] ")
    assert now_applied.startswith("[9") and again == "[]"  # the outbox migration and what came after it, once
    assert rows == ["k1\tfailed\t0\t\\N\tHTTP 403 (response body removed on upgrade: it may have echoed a secret)",
                    "k2\tdelivered\t0\t\\N\t"]


def test_the_outbox_migration_statements_are_idempotent_on_their_own(embedded_store) -> None:
    from spendstream.sinks.migrations import MIGRATIONS

    (migration,) = [m for m in MIGRATIONS if m.name.startswith("alert deliveries: a schedule")]
    for statement in migration.statements * 2:  # a crash before the bookkeeping row runs them again
        embedded_store.command(statement)
    columns = embedded_store.query("SELECT name FROM system.columns WHERE table = 'alert_deliveries' "
                                   "AND database = currentDatabase()").rows
    assert {"attempts", "first_attempt_at", "next_attempt_at"} <= {c[0] for c in columns}


def test_failed_deliveries_are_sent_again_after_the_documented_requeue(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    typo = Destination(name=f"hook-{tag}", kind="webhook", url=receiver.url("/in").replace("http:", "htps:"))
    fixed = Destination(name=typo.name, kind="webhook", url=receiver.url("/in"))
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
    try:
        assert _notifier(embedded_store, tag, typo).run_pass().failed == 1
        assert _notifier(embedded_store, tag, fixed).run_pass().delivered == 0  # failed stays failed
        embedded_store.command(  # as docs/alerts.md says
            "INSERT INTO alert_deliveries (destination, dedup_key, state, outcome, delivered_at) "
            "SELECT destination, dedup_key, state, 'pending', now64(3) FROM alert_deliveries FINAL "
            f"WHERE destination = '{typo.name}' AND outcome = 'failed'")
        assert _notifier(embedded_store, tag, fixed).run_pass().delivered == 1
    finally:
        receiver.close()
    assert len(receiver.requests) == 1
    assert _states(embedded_store, typo.name)[f"retry_storm:checkout-{tag}:0"]["attempts"] == 1
